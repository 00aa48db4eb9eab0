"""Reference numbers (`report.reference_numbers`, a CSV: dataset, experiment, metric, value) beside ours, with the difference."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from finesyn.config import Params, ParamsError
from finesyn.report.rows import Row, _fmt, _mean_std, columns


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def metric_aliases(params: Params) -> dict[str, str]:
    """Accepted metric names of a reference file -> column header ('top1', 'linear top-1', 'mAP', 'kNN-20', ...)."""
    out = {}
    for header, _, path in columns(params):
        out[_norm(header)] = header
        out[_norm(path[-1]) if path[0] != "knn" else _norm("knn" + path[-1])] = header
    return out


def load_reference_numbers(path: Path, params: Params) -> list[dict]:
    """Read `report.reference_numbers`: CSV with columns dataset, experiment, metric, value (extra
    columns such as `source` are kept). Any problem is an error naming the file and line."""
    path = Path(path)
    where = f"report.reference_numbers: {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{where}: cannot read ({e})") from None
    reader = csv.DictReader(io.StringIO(text))
    required = ("dataset", "experiment", "metric", "value")
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header or any(r not in header for r in required):
        raise ParamsError(f"{where}: the header must contain the columns {', '.join(required)} (got {header or 'an empty file'})")
    reader.fieldnames = header
    aliases = metric_aliases(params)
    out: list[dict]
    seen: dict[tuple[str, str, str], int]  # (dataset, experiment, metric) -> line
    out, seen = [], {}
    for i, raw in enumerate(reader, start=2):
        if None in raw:
            raise ParamsError(f"{where} line {i}: more fields than the header has")
        row = {k: (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        for k in ("dataset", "experiment", "metric"):
            if not row[k]:
                raise ParamsError(f"{where} line {i}: empty '{k}'")
        metric = aliases.get(_norm(row["metric"]))
        if metric is None:
            raise ParamsError(
                f"{where} line {i}: unknown metric {row['metric']!r}; use one of {sorted({h for h, _, _ in columns(params)})} (or top1, top5, rank1, rank5, map)"
            )
        try:
            value = float(row["value"])
        except ValueError:
            raise ParamsError(f"{where} line {i}: value {row['value']!r} is not a number") from None
        key = (row["dataset"], row["experiment"], metric)
        if key in seen:
            raise ParamsError(f"{where} line {i}: duplicate entry for {'/'.join(key)} (first on line {seen[key]})")
        seen[key] = i
        extra = {k: v for k, v in row.items() if k not in required and v}
        out.append(
            {"dataset": row["dataset"], "experiment": row["experiment"], "metric": metric, "value": value, "extra": extra, "line": i}
        )
    if not out:
        raise ParamsError(f"{where}: no rows")
    return out


def compare_reference(rows: list[Row], refs: list[dict]) -> list[dict]:
    """Each reference number with ours (mean ± std over seeds) and ours − reference."""
    index = {(r["dataset"], r["experiment"]): r for r in rows}
    out = []
    for ref in refs:
        row = index.get((ref["dataset"], ref["experiment"]))
        vals = row["values"].get(ref["metric"]) if row else None
        ours = _mean_std(vals) if vals else None
        out.append({**ref, "ours": ours, "ours_text": _fmt(vals) if vals else "–", "diff": (ours[0] - ref["value"]) if ours else None})
    return out
