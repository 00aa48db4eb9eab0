"""Write .dvc/plots/offline.html: DVC's plot page with vega, vega-lite and vega-embed inlined, so that
`dvc plots show` / `dvc plots diff` render with no network (DVC's own page loads them from a CDN).

The versions are the ones dvc-render's page names; the files come from npm (`npm pack`, the only network
use, at vendoring time). Each library's BSD-3-Clause licence and the sha256 of its file go in the page.

    make vendor-vega          # or: python tools/vendor_vega.py
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".dvc" / "plots" / "offline.html"
LIBS = [
    ("vega", "5.20.2", "build/vega.min.js"),
    ("vega-lite", "5.2.0", "build/vega-lite.min.js"),
    ("vega-embed", "6.18.2", "build/vega-embed.min.js"),
]
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # dvc-render fills these by plain text replacement

PAGE = """<!DOCTYPE html>
<!-- DVC's plot page, offline: written by tools/vendor_vega.py (make vendor-vega); .dvc/config names it as
     plots.html_template. {provenance} -->
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(name: str, version: str, member: str, tmp: Path) -> tuple[str, str]:
    subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=tmp, check=True, capture_output=True)
    with tarfile.open(tmp / f"{name}-{version}.tgz") as tar:
        read = lambda m: tar.extractfile(f"package/{m}").read().decode("utf-8")  # noqa: E731
        return read(member), read("LICENSE")


def main() -> int:
    scripts, provenance = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member in LIBS:
            js, licence = fetch(name, version, member, Path(tmp))
            if "</script" in js or any(p in js for p in PLACEHOLDERS):
                sys.exit(f"{name}@{version}: its code holds '</script' or a dvc-render placeholder; it cannot be inlined")
            digest = hashlib.sha256(js.encode()).hexdigest()
            provenance.append(f"\n     {name}@{version} {member} sha256 {digest}")
            scripts.append(f"    <!-- {name}@{version}:\n{licence.strip()}\n    -->\n    <script>\n{js}\n    </script>")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(PAGE.format(provenance="".join(provenance), scripts="\n".join(scripts)), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
