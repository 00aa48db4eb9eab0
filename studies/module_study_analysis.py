"""The module study's pre-registered analysis (studies/module_study_protocol.md): paired contrasts over the
seeds every arm of the contrast completed, Bonferroni-corrected Student-t intervals for the primary family,
and the decision each rule gives. Secondary metrics are reported with uncorrected 95 % intervals."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

CONTRASTS = {  # stage -> [(name, arm a, arm b)]: a − b; each stage is its own corrected family
    1: [
        ("module − baseline", "module_t01", "baseline_t01"),
        ("module − random dims", "module_t01", "random_t01"),
        ("random dims − baseline", "random_t01", "baseline_t01"),
    ],
    2: [  # amendment 1
        ("module − baseline, T 0.2", "module_t02", "baseline_t02"),
        ("module − random dims, T 0.2", "module_t02", "random_t02"),
        ("α-only − baseline", "alpha_only_t01", "baseline_t01"),
        ("mechanism pair − baseline", "mechanism_t01", "baseline_t01"),
        ("mechanism pair − its random dims", "mechanism_t01", "mechanism_random_t01"),
    ],
    3: [("oracle pair − baseline", "oracle_t01", "baseline_t01")],  # amendment 2: its own family, stage 2's rows
    4: [  # amendment 3: the second dataset (datasets.digits_photos)
        ("SSL − its start", "digits_baseline_t01", "digits_start"),
        ("module − baseline", "digits_module_t01", "digits_baseline_t01"),
        ("module − random dims", "digits_module_t01", "digits_random_t01"),
        ("random dims − baseline", "digits_random_t01", "digits_baseline_t01"),
    ],
}
PRIMARY = ["linear_top1", "mAP"]  # the corrected family: every contrast on each
SECONDARY = ["knn20_top1", "rank1"]
FAMILY_ALPHA = 0.05


def rows_by_arm(path: Path) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.setdefault(r["arm"], {})[r["seed"]] = r  # a repeated (arm, seed): the last row
    return out


def paired(a: dict[int, dict], b: dict[int, dict], metric: str, level: float) -> dict:
    """Mean of a − b over the seeds both have, its two-sided Student-t interval at `level`."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    d = [a[s][metric] - b[s][metric] for s in seeds]
    if len(d) < 2:
        return {"n": len(d), "mean": statistics.mean(d) if d else math.nan, "lo": math.nan, "hi": math.nan, "sd": math.nan}
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * statistics.stdev(d) / math.sqrt(len(d))
    m = statistics.mean(d)
    return {"n": len(d), "mean": m, "lo": m - half, "hi": m + half, "sd": statistics.stdev(d)}


def per_image(ra: dict, rb: dict) -> dict:
    """Linear top-1 of run a minus run b of one seed, paired over the test images (finesyn.eval.paired)."""
    from finesyn.eval.paired import paired_accuracy_difference, unpack_hits

    if ra["test_hits"]["ids_digest"] != rb["test_hits"]["ids_digest"]:
        raise ValueError(f"{ra['arm']} and {rb['arm']} of seed {ra['seed']} were scored on other test images")
    return paired_accuracy_difference(unpack_hits(ra["test_hits"]), unpack_hits(rb["test_hits"]))


def decision(e: dict, min_seeds: int = 16) -> str:
    """The protocol's rules, applied to a corrected interval."""
    if e["n"] < min_seeds:
        return f"no decision: {e['n']} of {min_seeds} seeds"
    if e["lo"] > 0:
        return "effect: a > b"
    if e["hi"] < 0:
        return "effect: a < b"
    if -1 < e["lo"] and e["hi"] < 1:
        return "no effect of 1 point or more"
    return "undecided"


def analyse(path: Path, stage: int = 1) -> str:
    arms, contrasts = rows_by_arm(path), CONTRASTS[stage]
    m = len(contrasts) * len(PRIMARY)
    level = 1 - FAMILY_ALPHA / m
    lines = [
        f"Rows: {path} ({', '.join(f'{a}: {len(s)} seeds' for a, s in sorted(arms.items()))}).",
        "",
        f"Primary family ({m} tests, Bonferroni: each interval at {100 * level:.2f} %):",
        "",
        "| contrast | metric | seeds | mean | corrected interval | sd of per-seed differences | decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a, b in contrasts:
        for metric in PRIMARY:
            e = paired(arms.get(a, {}), arms.get(b, {}), metric, level)
            lines.append(
                f"| {name} | {metric} | {e['n']} | {e['mean']:+.2f} | [{e['lo']:+.2f}, {e['hi']:+.2f}] | {e['sd']:.2f} | {decision(e)} |"
            )
    lines += [
        "",
        "Secondary (uncorrected 95 %, no decision rule):",
        "",
        "| contrast | metric | seeds | mean | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    for name, a, b in contrasts:
        for metric in SECONDARY:
            e = paired(arms.get(a, {}), arms.get(b, {}), metric, 0.95)
            lines.append(f"| {name} | {metric} | {e['n']} | {e['mean']:+.2f} | [{e['lo']:+.2f}, {e['hi']:+.2f}] |")
    lines += ["", "Per seed, linear top-1 paired per test image (the test set's share of the spread; 95 % normal interval):", ""]
    lines += ["| contrast | seed | a − b | per-image interval | McNemar p |", "|---|---|---|---|---|"]
    for name, a, b in contrasts:
        for seed in sorted(set(arms.get(a, {})) & set(arms.get(b, {}))):
            d = per_image(arms[a][seed], arms[b][seed])
            lines.append(
                f"| {name} | {seed} | {d['mean']:+.2f} | [{d['mean'] - d['half_width']:+.2f}, {d['mean'] + d['half_width']:+.2f}] | {d['mcnemar_p']:.2g} |"
            )
    means = [
        f"| {arm} | {len(s)} | {statistics.mean(r['linear_top1'] for r in s.values()):.2f} | {statistics.mean(r['mAP'] for r in s.values()):.2f} | "
        f"{statistics.mean(r['knn20_top1'] for r in s.values()):.2f} |"
        for arm, s in sorted(arms.items())
    ]
    lines += ["", "| arm | seeds | linear top-1 | mAP | kNN-20 |", "|---|---|---|---|---|", *means]
    return "\n".join(lines)
