"""Where do the encoders look? The paper's Fig. 3 claim, measured on every test image.

The report's Fig. 3 shows six images. Here, for each encoder of a finished grid on the generated
data (models/<dataset>/<experiment>/seed<k>/encoder.pt) and each of its 1,000 test images, two
Grad-CAM maps at the report's layer, and the share of each map's mass on the bird and on its
class-defining marking (the generator knows both masks; `finesyn.eval.gradcam.mass_on`):
* ssl: the report's map, explaining the similarity of the image to 8 augmented views of itself
  (`ssl_gradcam`): what the SSL objective relies on;
* class: the classic map, explaining the true class's logit under the pipeline's linear probe
  (refit on the stage's features at the l2 that probe.meta.json records; `class_gradcam`): where
  the evidence the probe reads lies.
An even map puts the region's area share on it (bird ~18 %, marking ~1.1 % here). The paper says
the module moves the map onto the discriminative detail: the module's row should then put more
mass on the marking than its baseline's, paired per seed.

    python -m studies.gradcam_marking --root . --seeds 0            # the committed default
    python -m studies.gradcam_marking --root ../clone --seeds 3 4 5 --append

Rows go to studies/gradcam_marking.jsonl (one per encoder, with its run id, the code version
and machine); `--summary` prints the table docs/findings.md quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from finesyn.config import load_params
from finesyn.data.augment import eval_view
from finesyn.data.prepared import open_cache
from finesyn.eval import gradcam
from finesyn.eval.features import load_encoder
from finesyn.paths import RunPaths
from finesyn.provenance import code_version, machine
from finesyn.report import attention
from finesyn.report.figures import GRADCAM_VIEWS, generator_masks
from finesyn.report.rows import paired_difference

OUT = Path(__file__).resolve().parent / "gradcam_marking.jsonl"
BATCH = attention.BATCH


def shares(root: Path, params, dataset: str, experiment: str, seed: int, ds, idx, masks) -> dict:
    """Mean share (%) of ssl and class Grad-CAM mass on the bird and the marking, with its standard error over images."""
    run = RunPaths(dataset, experiment, seed)
    roots = {"metrics": root / "metrics", "features": root / "features", "models": root / "models"}
    l2 = attention.probe_l2(run, roots)
    if l2 is None:
        raise SystemExit(f"{experiment} seed {seed}: no encoder, features or lbfgs probe record under {root}")
    stats = {"class": attention.class_shares(params, run, roots, ds, idx, masks, l2)}  # the report's own measurement
    backbone, _, state = load_encoder(run.model_dir(roots["models"]))
    raw = torch.from_numpy(np.ascontiguousarray(ds.images[idx]))
    crop = params.datasets[dataset].crop_size
    x, layer = eval_view(raw, crop), gradcam.cam_layer(backbone, crop)
    cams = []
    for s in range(0, len(idx), BATCH):
        views = gradcam.augmented_views(raw[s : s + BATCH], params.pretrain.augment, crop, GRADCAM_VIEWS, seed=0)
        cams.append(gradcam.ssl_gradcam(backbone, x[s : s + BATCH], views, layer).numpy())
    stats["ssl"] = attention.share_stats(np.concatenate(cams), masks)
    row = {"dataset": dataset, "experiment": experiment, "seed": seed, "layer": layer, "encoder_run_id": state.get("run_id"), "n": len(idx)}
    for kind in ("ssl", "class"):
        for key in ("bird", "bird_se", "marking", "marking_se"):
            row[f"{kind}_{key}"] = round(stats[kind][key], 3)
        row[f"{kind}_empty_maps"] = stats[kind]["empty"]
    row["area_bird"], row["area_marking"] = round(100 * float(masks[0].mean()), 3), round(100 * float(masks[1].mean()), 3)
    return row


def measure(root: Path, seeds: list[int], experiments: list[str] | None) -> list[dict]:
    params = load_params(root / "params.yaml")
    rows = []
    for dataset in params.grid.datasets:
        ds = open_cache(root / "data" / "prepared" / dataset)
        idx = ds.indices("test")
        masks = generator_masks(ds, idx, params.datasets[dataset].crop_size)
        if masks is None:
            print(f"{dataset}: not generated data, the masks are unknown: skipped")
            continue
        for seed in seeds:
            for exp in experiments or params.grid.experiments:
                row = shares(root, params, dataset, exp, seed, ds, idx, masks)
                row.update(code_version=code_version(), machine=machine())
                print(json.dumps({k: v for k, v in row.items() if k != "machine"}), flush=True)
                rows.append(row)
    return rows


def summary(rows: list[dict]) -> str:
    """Per experiment: mean over seeds of the per-seed mean shares; the module's paired difference per seed."""
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["experiment"], {})[r["seed"]] = r
    cols = ("ssl_bird", "ssl_marking", "class_bird", "class_marking")
    area = rows[0]
    lines = [
        f"Share (%) of Grad-CAM mass, mean over each seed's {area['n']} test images, then over seeds (± std over seeds; "
        f"one seed: ± SE over images). An even map: bird {area['area_bird']:.1f}, marking {area['area_marking']:.2f}.",
        "",
        "| experiment | seeds | " + " | ".join(c.replace("_", " on ") for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for exp, per_seed in by.items():
        seeds = sorted(per_seed)
        cells = []
        for c in cols:
            vals = [per_seed[s][c] for s in seeds]
            spread = statistics.stdev(vals) if len(vals) > 1 else per_seed[seeds[0]][f"{c}_se"]
            cells.append(f"{statistics.mean(vals):.2f} ± {spread:.2f}")
        lines.append(f"| {exp} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    lines.append("")
    for exp in by:
        base = exp.removesuffix("_synth")
        if exp == base or base not in by:
            continue
        common = sorted(set(by[exp]) & set(by[base]))
        for c in ("ssl_bird", "ssl_marking", "class_bird", "class_marking"):
            a, b = [by[exp][s][c] for s in common], [by[base][s][c] for s in common]
            eff = paired_difference(a, b)
            ci = (
                ""
                if eff["half_width"] is None
                else f", 95 % interval [{eff['mean'] - eff['half_width']:+.2f}, {eff['mean'] + eff['half_width']:+.2f}]"
            )
            per_seed = ", ".join(f"{x - y:+.2f}" for x, y in zip(a, b))
            lines.append(f"- {exp} − {base}, {c.replace('_', ' on ')}: mean {eff['mean']:+.2f}{ci} (seeds {common}: {per_seed})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--root", type=Path, default=Path("."), help="a checkout whose grid has run (models/, features/, metrics/, data/prepared/)"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--experiments", nargs="+", default=None, help="default: the grid's")
    ap.add_argument("--append", action="store_true", help=f"add to {OUT.name} instead of replacing it")
    ap.add_argument("--summary", action="store_true", help=f"only print the table of {OUT.name}")
    a = ap.parse_args(argv)
    if not a.summary:
        torch.manual_seed(0)
        rows = measure(a.root.resolve(), a.seeds, a.experiments)
        old = OUT.read_text() if a.append and OUT.exists() else ""
        OUT.write_text(old + "".join(json.dumps(r) + "\n" for r in rows))
    print(summary([json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
