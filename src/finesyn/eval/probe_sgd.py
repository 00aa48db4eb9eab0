"""Paper-style linear probe (``probe.protocol: sgd_paper``): SGD on a frozen backbone.

Protocol (paper notes, "Evaluation protocols"; facebookresearch/moco ``main_lincls.py``):

* the backbone is frozen: every parameter has ``requires_grad=False``, the module stays in
  ``eval()`` mode (BN uses and keeps its running statistics) and runs under ``no_grad``;
* a ``Linear`` (with bias; weight ~ N(0, 0.01), bias 0) on the L2-normalised pooled features,
  cross-entropy, SGD lr 30, momentum 0.9, weight decay 0, batch 256, 100 epochs, lr x0.1 at
  epochs 60 and 80 (epochs counted from 0, as in moco's ``adjust_learning_rate``);
* train view: RandomResizedCrop(crop_size, scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip,
  drawn from the prepared S x S cache, normalised; no colour jitter. Test view: the centre
  ``crop_size`` crop of the S x S cache (= Resize(S) + CenterCrop(crop_size));
* the final epoch is reported. ``report="best_on_test"`` reports the epoch with the best test
  top-1 instead, and labels it as test-set selection in ``"selection"``;
* moco's ``sanity_check``: a copy of the backbone's ``state_dict`` (parameters *and* buffers,
  BN running statistics included) is taken before training; after training every tensor must
  be bit-identical, else :class:`BackboneChangedError` names the changed keys.

Seeded (Linear init, shuffling and augmentation each from their own generator); on CPU two
runs with the same seed and thread count give identical numbers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from finesyn.data.augment import eval_view, normalize, random_resized_crop, to_float
from finesyn.device import select_device

log = logging.getLogger(__name__)

CROP_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop defaults
CROP_RATIO = (3 / 4, 4 / 3)
FLIP_P = 0.5
LR_GAMMA = 0.1
REPORTS = ("final", "best_on_test")
SELECTION = {
    "final": "final epoch",
    "best_on_test": "best epoch on the TEST set (test-set selection; not a clean estimate)",
}


class BackboneChangedError(RuntimeError):
    """The frozen backbone's state_dict changed during the probe; ``.changed`` lists the keys."""

    def __init__(self, changed: Sequence[str]):
        self.changed = list(changed)
        shown = ", ".join(self.changed[:12]) + (f", ... and {len(self.changed) - 12} more" if len(self.changed) > 12 else "")
        bn = any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in self.changed)
        hint = " BN running statistics changed: a BatchNorm layer ran in train mode." if bn else ""
        super().__init__(
            f"sanity check failed: the frozen backbone changed during the linear probe "
            f"({len(self.changed)} tensor(s) not bit-identical: {shown}).{hint} "
            "The probe result is invalid."
        )


def snapshot_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of every tensor in ``module.state_dict()`` (parameters and buffers)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # compare the raw bytes: NaN == NaN and -0.0 != 0.0, i.e. "bit-identical", not "numerically equal"
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def changed_keys(module: nn.Module, snapshot: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of ``module.state_dict()`` that differ from ``snapshot`` (added or removed keys too)."""
    now = module.state_dict()
    keys = list(snapshot) + [k for k in now if k not in snapshot]
    return [k for k in keys if k not in now or k not in snapshot or not _bits_equal(now[k].detach().cpu(), snapshot[k])]


def verify_unchanged(module: nn.Module, snapshot: Mapping[str, torch.Tensor]) -> int:
    """Raise :class:`BackboneChangedError` unless every tensor is bit-identical; returns the count checked."""
    changed = changed_keys(module, snapshot)
    if changed:
        raise BackboneChangedError(changed)
    return len(snapshot)


def lr_at(epoch: int, base_lr: float, milestones: Sequence[int], gamma: float = LR_GAMMA) -> float:
    """Step schedule of moco's ``adjust_learning_rate``: x gamma for each milestone <= epoch (0-based)."""
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


def _scores(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict:
    y_np = y.cpu().numpy()
    top = logits.topk(min(5, num_classes), dim=1).indices
    hit1 = (top[:, 0] == y).cpu().numpy()
    hit5 = (top == y[:, None]).any(1).cpu().numpy()
    n_c = np.bincount(y_np, minlength=num_classes)
    hit_c = np.bincount(y_np, hit1, minlength=num_classes)
    return {
        "top1": float(100.0 * hit1.mean()) if len(y_np) else float("nan"),
        "top5": float(100.0 * hit5.mean()) if len(y_np) else float("nan"),
        "per_class_top1": [float(100.0 * h / n) if n else None for h, n in zip(hit_c, n_c)],
    }


@torch.no_grad()
def _features(backbone: nn.Module, images: np.ndarray, rows: np.ndarray, crop_size: int, batch_size: int, dev) -> torch.Tensor:
    """L2-normalised pooled features of the deterministic centre-crop view."""
    out = []
    for start in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[rows[start : start + batch_size]])).to(dev)
        out.append(F.normalize(backbone(eval_view(x, crop_size)).float(), dim=1))
    return torch.cat(out)


def protocol_text(
    *, lr: float, momentum: float, weight_decay: float, batch_size: int, epochs: int, milestones: Sequence[int], crop_size: int, report: str
) -> str:
    return (
        "sgd_paper: Linear (bias, init N(0, 0.01)) on L2-normalised pooled features of the frozen backbone "
        "(requires_grad False, BN in eval mode), cross-entropy; "
        f"SGD lr {lr:g}, momentum {momentum:g}, weight decay {weight_decay:g}, batch {batch_size}, {epochs} epochs, "
        f"lr x{LR_GAMMA:g} at epochs {list(milestones)}; train view RandomResizedCrop({crop_size}, scale "
        f"{CROP_SCALE}, ratio (3/4, 4/3)) + flip from the SxS cache, test view centre crop {crop_size}; "
        f"reported: {SELECTION[report]}; backbone state_dict verified bit-identical after training"
    )


def _checked_inputs(images, train_rows, train_labels, test_rows, test_labels, num_classes, crop_size, epochs, report):
    """(train rows, train labels, test rows, test labels) as arrays, or a ValueError saying what is wrong."""
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    if report not in REPORTS:
        raise ValueError(f"report must be one of {REPORTS}, got {report!r}")
    ytr, yte = np.asarray(train_labels, dtype=np.int64), np.asarray(test_labels, dtype=np.int64)
    train_rows, test_rows = np.asarray(train_rows), np.asarray(test_rows)
    if len(ytr) != len(train_rows) or len(yte) != len(test_rows):
        raise ValueError("rows and labels differ in length")
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError("sgd_probe needs at least one training and one test image")
    for name, y in (("train", ytr), ("test", yte)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    if crop_size > images.shape[1] or crop_size > images.shape[2]:
        raise ValueError(f"crop_size {crop_size} exceeds the cached image size {images.shape[1]}")
    return train_rows, ytr, test_rows, yte


def _linear_head(dim: int, num_classes: int, seed: int, dev) -> nn.Linear:
    """moco main_lincls' initialisation: weights N(0, 0.01²), bias 0 (seeded)."""
    head = nn.Linear(dim, num_classes).to(dev)
    g_init = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g_init) * 0.01)
        head.bias.zero_()
    return head


def _train_epoch(head, opt, backbone, images, train_rows, ytr_t, perm, batch_size, crop_size, g_aug, dev) -> tuple[float, int]:
    """One pass over the train images in `perm` order, augmented views of the frozen backbone: (loss sum, correct)."""
    head.train()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(perm), batch_size):
        b = perm[start : start + batch_size]
        x = torch.from_numpy(np.ascontiguousarray(images[train_rows[b]])).to(dev)
        y = ytr_t[b].to(dev)
        with torch.no_grad():
            x = normalize(random_resized_crop(to_float(x), crop_size, CROP_SCALE, CROP_RATIO, FLIP_P, g_aug))
            z = F.normalize(backbone(x).float(), dim=1)
        logits = head(z)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * len(b)
        correct += int((logits.detach().argmax(1) == y).sum())
    return loss_sum, correct


def sgd_probe(
    backbone: nn.Module,
    images: np.ndarray,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    test_rows: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    crop_size: int,
    lr: float = 30.0,
    epochs: int = 100,
    milestones: Sequence[int] = (60, 80),
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    report: str = "final",
    seed: int = 0,
    device: str = "auto",
    eval_batch_size: int = 256,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Train a linear classifier on the frozen ``backbone``; score the test set; verify the backbone.

    ``images`` is the prepared cache's uint8 ``(N, S, S, 3)`` array (a memmap is fine);
    ``train_rows``/``test_rows`` index into it, ``*_labels`` are aligned with them and lie in
    ``[0, num_classes)``. The backbone is put in eval mode with ``requires_grad=False`` (in place)
    and moved to the selected device. Raises :class:`BackboneChangedError` if any tensor of
    its ``state_dict`` is not bit-identical after training. ``progress(epoch, epochs, info)`` is
    called before the first epoch and after each (info: lr, loss, train top-1); without it each
    epoch is a log line.
    """
    train_rows, ytr, test_rows, yte = _checked_inputs(
        images, train_rows, train_labels, test_rows, test_labels, num_classes, crop_size, epochs, report
    )

    dev = select_device(device, key="probe.sgd_device")
    backbone = backbone.to(dev).eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    before = snapshot_state(backbone)  # moco main_lincls: sanity_check against the pre-training weights

    dim = int(getattr(backbone, "dim", 0)) or _features(backbone, images, train_rows[:1], crop_size, 1, dev).shape[1]
    head = _linear_head(dim, num_classes, seed, dev)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    g_aug = torch.Generator(device=dev).manual_seed(seed + 1)
    g_data = torch.Generator().manual_seed(seed + 2)

    yte_t = torch.from_numpy(yte).to(dev)
    # The backbone is frozen and the test view deterministic: the test features are computed once.
    test_z = _features(backbone, images, test_rows, crop_size, eval_batch_size, dev)
    ytr_t = torch.from_numpy(ytr)
    n = len(ytr)
    history, best = [], None
    if progress:
        progress(0, epochs, "")
    for epoch in range(epochs):
        lr_e = lr_at(epoch, lr, milestones)
        for group in opt.param_groups:
            group["lr"] = lr_e
        perm = torch.randperm(n, generator=g_data).numpy()
        loss_sum, correct = _train_epoch(head, opt, backbone, images, train_rows, ytr_t, perm, batch_size, crop_size, g_aug, dev)
        row = _epoch_row(epoch + 1, lr_e, loss_sum, correct, n)
        if report == "best_on_test":  # test-set selection: only when explicitly asked for
            with torch.no_grad():
                sc = _scores(head.eval()(test_z), yte_t, num_classes)
            row["test_top1"] = sc["top1"]
            best = best if best is not None and best[1]["top1"] >= sc["top1"] else (epoch + 1, sc)
        history.append(row)
        _announce(progress, epochs, row)

    checked = verify_unchanged(backbone, before)  # raises BackboneChangedError naming the keys

    if report == "final":
        with torch.no_grad():
            scores, epoch_reported = _scores(head.eval()(test_z), yte_t, num_classes), epochs
    else:
        assert best is not None  # best_on_test scores every epoch, and epochs >= 1 (_checked_inputs)
        epoch_reported, scores = best
    return _record(scores, n, len(yte), epoch_reported, epochs, report, checked, dev, history, lr=lr, momentum=momentum,
                   weight_decay=weight_decay, batch_size=batch_size, milestones=milestones, crop_size=crop_size)  # fmt: skip


def _epoch_row(epoch: int, lr: float, loss_sum: float, correct: int, n: int) -> dict:
    """One epoch of the probe's history; a non-finite loss stops the probe (a diverged lr, not a result)."""
    row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / n, "train_top1": 100.0 * correct / n}
    if not math.isfinite(row["train_loss"]):
        raise FloatingPointError(f"sgd_paper probe: non-finite training loss at epoch {epoch} (lr {lr:g})")
    return row


def _announce(progress: Callable[[int, int, str], None] | None, epochs: int, row: dict) -> None:
    """The epoch to the progress callback (a bar, or lines with an ETA), or as a log line without one."""
    info = f"lr {row['lr']:g} loss {row['train_loss']:.4f} train top-1 {row['train_top1']:.2f}%"
    if progress:
        progress(row["epoch"], epochs, info)
    else:
        log.info("probe epoch %d/%d %s", row["epoch"], epochs, info)


def _record(scores, n_train, n_test, epoch_reported, epochs, report, checked, dev, history, **recipe) -> dict:
    """probe.json's fields for the sgd_paper protocol."""
    return {
        **scores,
        "n_train": int(n_train),
        "n_test": int(n_test),
        "epoch": int(epoch_reported),
        "epochs": int(epochs),
        "selection": SELECTION[report],
        "sanity_check": {
            "passed": True,
            "tensors_checked": checked,
            "rule": "every backbone state_dict tensor (parameters and buffers) bit-identical before and after training",
        },
        "device": str(dev),
        "history": history,
        "protocol": protocol_text(**recipe, epochs=epochs, report=report),
    }
