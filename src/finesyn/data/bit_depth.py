"""8-bit images from high-bit-depth files, by the bits that carry the values.

A 16-bit container often holds fewer bits: 8-bit values saved as 16-bit, 12-bit camera raw, an int32
TIFF of small counts. Keeping the high byte of a 16-bit word turned all of these black. The depth is
taken from the file where it says (PNG sBIT, TIFF MaxSampleValue) and otherwise from the image's own
maximum (the smallest of 8, 10, 12, 14, 16 bits that holds it), then shifted down to 8 bits. A truly
16-bit image that is almost black (all values < 256) is therefore shown at full range, which is what a
feature extractor wants anyway.

PIL decodes 16-bit colour PNGs (RGB, RGBA, grey + alpha) to the high byte of each sample before any of
this can look at them, so those files are decoded by torchvision instead (`wide_png`; imported only when
such a file is met: the prepare stage otherwise never loads torch). torchvision 0.29 deprecates its image
decoders in favour of TorchCodec; the pinned version has them, and a version without them fails the test
of 16-bit colour PNGs in tests/test_cache.py, the place to switch.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
from PIL import Image

DEPTHS = (8, 10, 12, 14, 16)
_PNG = b"\x89PNG\r\n\x1a\n"


def png_significant_bits(path: str | os.PathLike[str]) -> int | None:
    """The sBIT chunk's largest channel depth, None where the PNG has none (it precedes IDAT)."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG:
            return None
        while header := f.read(8):
            if len(header) < 8:
                return None
            length, kind = struct.unpack(">I4s", header)
            if kind == b"sBIT":
                data = f.read(length)
                return max(data) if data else None
            if kind in (b"IDAT", b"IEND"):
                return None
            f.seek(length + 4, 1)  # data and CRC
    return None


def declared_bits(im: Image.Image, path: str | os.PathLike[str]) -> int | None:
    """How many bits the file says its samples use, where it says so."""
    if im.format == "PNG":
        return png_significant_bits(path)
    if im.format == "TIFF":
        tags = getattr(im, "tag_v2", {})
        top = tags.get(281) or tags.get(341)  # MaxSampleValue / SMaxSampleValue, one per sample or one
        if top is not None:
            return int(max(np.atleast_1d(top))).bit_length()
    return None


def png_header(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR; None for another format."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != _PNG or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def wide_png(im: Image.Image, path: str | os.PathLike[str]) -> Image.Image | None:
    """A 16-bit colour or grey-alpha PNG as 8-bit RGB by the bits its values use (as `to_8bit`); None for any
    other file, which PIL decodes faithfully (`im`, the file opened by PIL, spares other formats a read)."""
    if im.format != "PNG" or im.mode not in ("RGB", "RGBA", "LA"):
        return None
    header = png_header(path)
    if header is None or header[0] != 16 or header[1] not in (2, 4, 6):  # RGB, grey + alpha, RGBA
        return None
    with warnings.catch_warnings():  # the deprecation notice, once per image otherwise
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_png, read_file

        a = decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()  # H x W x C, uint16
    colour = a[..., :3] if a.shape[2] >= 3 else np.repeat(a[..., :1], 3, axis=2)  # alpha dropped, as convert("RGB")
    return Image.fromarray(_shifted_to_8bit(colour, png_significant_bits(path)), mode="RGB")


def value_bits(a: np.ndarray) -> int:
    """The smallest usual depth that holds every value of `a`."""
    top = int(a.max()) if a.size else 0
    return next(d for d in DEPTHS if top < 1 << d) if top < 1 << DEPTHS[-1] else DEPTHS[-1]


def _shifted_to_8bit(a: np.ndarray, declared: int | None) -> np.ndarray:
    """`a >> (bits - 8)` as uint8, bits = the depth its values use, widened to the declared one where that is larger."""
    bits = max(value_bits(a), declared) if declared and declared <= DEPTHS[-1] else value_bits(a)
    return (a.astype(np.uint32) >> (bits - 8)).astype(np.uint8)


def to_8bit(im: Image.Image, declared: int | None = None) -> Image.Image:
    """A high-bit-depth single-channel image ("I;16*" or "I") as 8-bit "L", `v >> (bits - 8)`.

    PIL's ``convert`` clips 16-bit grey at 255 (near white), and decodes 16-bit RGB PNGs to their high
    bytes, which the shift reproduces for 16-bit content (a grey image equals its RGB copy). Values
    above the declared depth widen it rather than wrap. Integers beyond 16 bits and float images have no
    agreed 8-bit scale: refused (the image is then listed as bad)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise ValueError(
                f"mode {im.mode} pixel values span {int(a.min())}..{int(a.max())}, outside 0..65535: save the image as 8- or 16-bit"
            )
        return Image.fromarray(_shifted_to_8bit(a, declared), mode="L")
    if im.mode == "F":
        raise ValueError("float image (mode F) has no defined 8-bit scale: save it as 8- or 16-bit")
    return im
