"""The README's results table is the committed run's (reports/results.csv), to the printed digit.

Read from git's HEAD where there is one, so a user's own `dvc repro` / `dvc exp run` in the workspace
(which rewrites reports/) does not fail the suite; the file itself elsewhere (an exported tree).
"""

import csv
import io
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("<!-- results:begin -->") : readme.index("<!-- results:end -->")]
    git = subprocess.run(["git", "show", "HEAD:reports/results.csv"], cwd=ROOT, capture_output=True, text=True)
    text = git.stdout if git.returncode == 0 else (ROOT / "reports" / "results.csv").read_text()
    rows = {r["experiment"]: r for r in csv.DictReader(io.StringIO(text))}
    shown = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| ([^|]+) \|$", table, re.M)
    assert [name for name, *_ in shown] == list(rows)
    start = float(rows["random_init"]["linear top-1 mean"])
    for name, top1, knn, delta in shown:
        assert float(top1) == round(float(rows[name]["linear top-1 mean"]), 1), name
        assert float(knn) == round(float(rows[name]["kNN-20 mean"]), 1), name
        if name != "random_init":
            assert float(delta) == round(float(rows[name]["linear top-1 mean"]) - start, 1), name
