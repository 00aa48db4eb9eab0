"""Where each encoder's class evidence lies, over every test image of generated data: the share of
the Grad-CAM mass of its linear probe's class logit on the bird and on the marking that defines the
class (the generator knows both masks). The measurable form of the paper's Fig. 3 claim, that the
module moves the encoder onto the discriminative detail: read the module's row against its
baseline's, and every row against the area share an even map would put there."""

from __future__ import annotations

import html
import logging
import statistics
from pathlib import Path

from finesyn.artifacts import read_json
from finesyn.config import Params
from finesyn.paths import RunPaths
from finesyn.report.roles import module_pairs
from finesyn.report.rows import paired_difference

BATCH = 250  # images per Grad-CAM pass: bounds the activations kept for the backward
MAX_IMAGES = 2000  # test images measured (every k-th of the split): the SE of a share is ~2 % of it; all 10,000 take 5x the time
HEADERS = ("experiment", "seeds", "on bird (%)", "on marking (%)")


def probe_l2(run: RunPaths, roots: dict[str, Path]) -> float | None:
    """The L2 strength the lbfgs probe chose for this run; None without an encoder, features or such a
    record (a partial grid, `python -m finesyn.report` mid-run; the sgd_paper probe keeps no weights to refit)."""
    meta = RunPaths.meta_of(run.probe(roots["metrics"]))
    if not (run.model_dir(roots["models"]) / "encoder.pt").is_file() or not run.features(roots["features"]).is_file() or not meta.is_file():
        return None
    return read_json(meta).get("l2")


def share_stats(cam, masks) -> dict:
    """Mean share (%) of each map's mass on the bird and on the marking, its SE over the images, and the
    number of all-zero maps (no mass to share: left out of the means)."""
    import numpy as np

    from finesyn.eval import gradcam

    out = {}
    for region, mask in zip(("bird", "marking"), masks):
        v = 100 * gradcam.mass_on(cam, mask)
        ok = v[np.isfinite(v)]
        out[region], out[f"{region}_se"] = float(ok.mean()), float(ok.std(ddof=1) / np.sqrt(len(ok)))
    out["empty"] = int((~np.isfinite(v)).sum())
    return out


def class_shares(params: Params, run: RunPaths, roots: dict[str, Path], ds, idx, masks, l2: float) -> dict:
    """One encoder's class-logit Grad-CAM on the test images `idx`: `share_stats` of its maps."""
    import numpy as np
    import torch

    from finesyn.artifacts import check_same_run, load_features
    from finesyn.data.augment import eval_view
    from finesyn.eval import gradcam
    from finesyn.eval.features import load_encoder
    from finesyn.eval.probe import fit_linear

    backbone, _, _ = load_encoder(run.model_dir(roots["models"]))
    feats = load_features(run.features(roots["features"]))
    check_same_run(run.features(roots["features"]), feats["encoder_run_id"], run.model_dir(roots["models"]))
    weight, bias = fit_linear(feats["train_features"], feats["train_labels"], int(feats["num_classes"]), l2, params.probe.max_iter)
    crop = params.datasets[run.dataset].crop_size
    layer = gradcam.cam_layer(backbone, crop)
    cams = []
    for s in range(0, len(idx), BATCH):
        rows = idx[s : s + BATCH]
        x = eval_view(torch.from_numpy(np.ascontiguousarray(ds.images[rows])), crop)
        labels = torch.from_numpy(ds.labels[rows].astype(np.int64))
        cams.append(gradcam.class_gradcam(backbone, x, weight, bias, labels, layer).numpy())
    return share_stats(np.concatenate(cams), masks)


def measure(params: Params, roots: dict[str, Path], log: logging.Logger) -> list[dict]:
    """Per dataset with generator masks: area shares, and per experiment the per-seed shares."""
    from finesyn.data.prepared import open_cache
    from finesyn.report.figures import generator_masks

    out = []
    for dataset in params.grid.datasets:
        ds = open_cache(roots["data"] / dataset)
        test = ds.indices("test")
        idx = test[:: max(1, len(test) // MAX_IMAGES)][:MAX_IMAGES]
        masks = generator_masks(ds, idx, params.datasets[dataset].crop_size)
        if masks is None:
            continue  # real images: where the class-defining detail lies is not known
        runs: dict[str, dict[int, dict]] = {}
        for exp in params.grid.experiments:
            for seed in params.grid.seeds:
                run = RunPaths(dataset, exp, seed)
                l2 = probe_l2(run, roots)
                if l2 is None:
                    log.info(
                        "%s/%s seed %d: no encoder, features or lbfgs probe record: its class evidence is not measured", dataset, exp, seed
                    )
                    continue
                runs.setdefault(exp, {})[seed] = class_shares(params, run, roots, ds, idx, masks, l2)
        if not runs:
            continue
        area = {"bird": 100 * float(masks[0].mean()), "marking": 100 * float(masks[1].mean())}
        out.append({"dataset": dataset, "n": len(idx), "n_test": len(test), "area": area, "runs": runs})
        log.info("class-logit Grad-CAM of %d encoders on %d test images of %s", sum(map(len, runs.values())), len(idx), dataset)
    return out


def add_to_summary(summary: dict, measured: list[dict]) -> dict:
    """results.json's cells for these shares: `class-logit Grad-CAM on <region> (%)` -> {mean, std, values} over the seeds."""
    for m in measured:
        for exp, per_seed in m["runs"].items():
            cells = summary.setdefault(m["dataset"], {}).setdefault(exp, {})
            for region in ("bird", "marking"):
                values = [per_seed[s][region] for s in sorted(per_seed)]
                std = statistics.stdev(values) if len(values) > 1 else None
                cells[f"class-logit Grad-CAM on {region} (%)"] = {"mean": statistics.mean(values), "std": std, "values": values}
    return summary


def _cell(per_seed: dict[int, dict], region: str) -> str:
    vals = [r[region] for r in per_seed.values()]
    if len(vals) == 1:
        return f"{vals[0]:.2f} ± {next(iter(per_seed.values()))[f'{region}_se']:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def _shift(m: dict, base: str, synth: str, region: str) -> str:
    seeds = sorted(set(m["runs"][base]) & set(m["runs"][synth]))
    eff = paired_difference([m["runs"][synth][s][region] for s in seeds], [m["runs"][base][s][region] for s in seeds])
    if eff["half_width"] is None:
        return f"{eff['mean']:+.2f} (1 seed: no interval)"
    return f"{eff['mean']:+.2f} [{eff['mean'] - eff['half_width']:+.2f}, {eff['mean'] + eff['half_width']:+.2f}] ({eff['n']} seeds)"


def _images(m: dict) -> str:
    n, total = m["n"], m.get("n_test", m["n"])
    return f"all {n} test images" if n == total else f"{n} of the {total} test images (every {total // n}th)"


def intro(m: dict) -> str:
    return (
        f"Grad-CAM of each encoder's class logit under its linear probe (the probe refit at the L2 strength its probe.meta.json records), "
        f"over {_images(m)}: the share of the map's mass on the bird and on its class-defining marking. An even map puts "
        f"the area share there: bird {m['area']['bird']:.2f} %, marking {m['area']['marking']:.2f} %. ± is the standard deviation over "
        "seeds (one seed: the standard error over the images). The module's shift is the paired difference per seed, with its 95 % "
        "Student-t interval."
    )


def table_rows(params: Params, m: dict) -> tuple[list[list[str]], list[str]]:
    rows = [[exp, ",".join(map(str, sorted(per))), _cell(per, "bird"), _cell(per, "marking")] for exp, per in m["runs"].items()]
    shifts = [
        f"{synth} − {base}: on the bird {_shift(m, base, synth, 'bird')}, on the marking {_shift(m, base, synth, 'marking')}"
        for base, synth in module_pairs(params)
        if base in m["runs"] and synth in m["runs"]
    ]
    return rows, shifts


def to_markdown(params: Params, measured: list[dict]) -> str:
    parts = []
    for m in measured:
        rows, shifts = table_rows(params, m)
        parts += [f"\n## Where the class evidence lies: {m['dataset']}\n", intro(m), ""]
        parts += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)] + ["| " + " | ".join(r) + " |" for r in rows]
        parts += [""] + [f"- {s}" for s in shifts]
    return "\n".join(parts) + ("\n" if parts else "")


def to_html(params: Params, measured: list[dict]) -> list[str]:
    h = []
    for m in measured:
        rows, shifts = table_rows(params, m)
        h += [f'<h3 id="attention-{html.escape(m["dataset"])}">Where the class evidence lies: {html.escape(m["dataset"])}</h3>']
        h += [f"<p>{html.escape(intro(m))}</p>", "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in HEADERS) + "</tr>"]
        h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows] + ["</table>"]
        h += ["<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in shifts) + "</ul>"] if shifts else []
    return h
