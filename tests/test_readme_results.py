"""The README's results table is the committed run's (reports/results.csv), to the printed digit."""

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_matches_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("<!-- results:begin -->") : readme.index("<!-- results:end -->")]
    rows = {r["experiment"]: r for r in csv.DictReader((ROOT / "reports" / "results.csv").open())}
    shown = re.findall(r"^\| `(\w+)` \| ([\d.]+) \| ([\d.]+) \| ([^|]+) \|$", table, re.M)
    assert [name for name, *_ in shown] == list(rows)
    start = float(rows["random_init"]["linear top-1 mean"])
    for name, top1, knn, delta in shown:
        assert float(top1) == round(float(rows[name]["linear top-1 mean"]), 1), name
        assert float(knn) == round(float(rows[name]["kNN-20 mean"]), 1), name
        if name != "random_init":
            assert float(delta) == round(float(rows[name]["linear top-1 mean"]) - start, 1), name
