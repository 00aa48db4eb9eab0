"""Which files each figure is drawn from, and its caption (the drawing is in `finesyn.report.plots`)."""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import TypedDict

from finesyn.config import Params
from finesyn.io import atomic_write_bytes
from finesyn.paths import RunPaths
from finesyn.report.roles import baseline_of, first_baseline, makes_pairs, module_pairs, pair_experiments
from finesyn.report.rows import TOP1, Row, _mean_std, _row_index

GRADCAM_IMAGES = 6


GRADCAM_VIEWS = 8


FIG5_HINT = """experiments:
  mocov2_a001_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.01, nu: 0.0}}
  mocov2_a005_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.05, nu: 0.0}}
  mocov2_a02_nu0:  {method: mocov2, synth: true, overrides: {alpha: 0.2, nu: 0.0}}
  mocov2_a1_nu0:   {method: mocov2, synth: true, overrides: {alpha: 1.0, nu: 0.0}}
grid:
  experiments: [random_init, mocov2, mocov2_synth, mocov2_a001_nu0, mocov2_a005_nu0, mocov2_a02_nu0, mocov2_a1_nu0]"""


class Figure(TypedDict):
    """One figure of the report: where it goes, its caption and the files it was drawn from."""

    id: str
    section: str  # html.SECTIONS id: fig2 ... fig5, curves
    title: str
    caption: str  # HTML
    path: Path | None  # the PNG; None when there was nothing to draw (the caption says why)
    sources: list[str]


def _seed0(params: Params) -> int:
    return params.grid.seeds[0]


def fig_variance(params: Params, features_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.artifacts import load_features
    from finesyn.report import plots

    exp = first_baseline(params)
    figs = []
    for dataset in params.grid.datasets:
        fid = f"fig2_variance_{dataset}"
        title = f"Fig. 2 analogue — {dataset}"
        if exp is None:
            figs.append(
                Figure(
                    id=fid,
                    section="fig2",
                    title=title,
                    path=None,
                    sources=[],
                    caption="Not drawn: the grid has no SSL baseline (an experiment with a method, synth: false and no overrides).",
                )
            )
            continue
        src = RunPaths(dataset, exp, _seed0(params)).features(features_root)
        feats = load_features(src)
        x, y = feats["test_features"], feats["test_labels"]
        kind = str(feats.get("feature", "backbone"))
        fig, s = plots.variance_figure(x, y, f"{dataset}: {exp} (seed {_seed0(params)}), {len(y)} test images, {kind} features")
        path = plots.save_png(fig, fig_dir / f"{fid}.png")
        f = s["fisher"]
        caption = (
            f"Test features of the baseline encoder <b>{exp}</b> (seed {_seed0(params)}; extract.feature = {kind}). "
            f"Left: per-dimension variance over the {len(y)} test images, sorted (d = {len(s['var'])}). "
            f"Right: the two classes with the most test images (labels {s['pair'][0]} and {s['pair'][1]}) along the minimum-variance "
            f"dimension v_min = {s['j_min']}{' (lowest non-constant; ' + str(s['n_constant']) + ' constant dims excluded)' if s['n_constant'] else ''} "
            f"and the maximum-variance dimension v_max = {s['j_max']}, with a Gaussian KDE of each class on each axis. "
            f"The paper's claim is that classes separate along v_max, not along v_min; here the Fisher ratio "
            f"(squared mean difference / mean within-class variance) is {f['v_min']:.3f} along v_min and {f['v_max']:.3f} along v_max."
        )
        run = str(feats.get("encoder_run_id", ""))
        figs.append(Figure(id=fid, section="fig2", title=title, path=path, caption=caption, sources=[f"{src} (encoder run {run})"]))
        log.info("wrote %s", path)
    return figs


def _gradcam_indices(labels, test_idx, n: int):
    """n test images: the first test image of each class (in label order), then the next ones."""
    import numpy as np

    chosen = []
    for c in np.unique(labels[test_idx]):
        chosen.append(int(test_idx[np.flatnonzero(labels[test_idx] == c)[0]]))
        if len(chosen) == n:
            break
    for i in test_idx:
        if len(chosen) >= n:
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return np.array(sorted(chosen[:n]))


def fig_gradcam(params: Params, data_root: Path, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    import numpy as np
    import torch

    from finesyn.data.augment import denormalize, eval_view
    from finesyn.data.cache import open_cache
    from finesyn.eval import gradcam
    from finesyn.eval.features import load_encoder
    from finesyn.report import plots

    pairs = module_pairs(params)
    seed = _seed0(params)
    figs = []
    for dataset in params.grid.datasets:
        fid = f"fig3_gradcam_{dataset}"
        title = f"Fig. 3 analogue — {dataset}"
        if not pairs:
            figs.append(
                Figure(
                    id=fid,
                    section="fig3",
                    title=title,
                    path=None,
                    sources=[],
                    caption="Not drawn: the grid needs a baseline and its +module experiment (e.g. mocov2 and mocov2_synth: same method, synth false/true, no overrides).",
                )
            )
            continue
        ds = open_cache(data_root / dataset)
        crop = params.datasets[dataset].crop_size
        idx = _gradcam_indices(ds.labels, ds.indices("test"), GRADCAM_IMAGES)
        raw = torch.from_numpy(np.ascontiguousarray(ds.images[idx]))
        x = eval_view(raw, crop)
        views = gradcam.augmented_views(raw, params.pretrain.augment, crop, GRADCAM_VIEWS, seed=0)
        cols, sources, layers = [], [f"{data_root / dataset} (test images {', '.join(ds.ids[i] for i in idx)})"], set()
        for base, mod in pairs:
            for exp in (base, mod):
                model_dir = RunPaths(dataset, exp, seed).model_dir(models_root)
                backbone, _, state = load_encoder(model_dir)
                layer = gradcam.cam_layer(backbone, crop)
                layers.add(layer)
                cam = gradcam.ssl_gradcam(backbone, x, views, layer).numpy()
                cols.append((f"{exp}" + ("" if layer == "layer4" else f" ({layer})"), cam))
                sources.append(f"{model_dir / 'encoder.pt'} (run {state.get('run_id')})")
        images = denormalize(x).permute(0, 2, 3, 1).numpy()
        fig = plots.gradcam_figure(images, cols, f"{dataset}: SSL-induced Grad-CAM, seed {seed}")
        path = plots.save_png(fig, fig_dir / f"{fid}.png")
        layer_text = ", ".join(sorted(layers))
        low_res = (
            ""
            if layers == {"layer4"}
            else (
                f" At this input size ({crop} px) layer4's maps are smaller than 4×4, so the deepest block with maps at least 4×4 ({layer_text}) is used."
            )
        )
        caption = (
            f"Spatial Grad-CAM on {GRADCAM_IMAGES} test images (centre crops; one per class where possible), "
            f"baseline vs +module encoders ({'; '.join(f'{b} vs {m}' for b, m in pairs)}; seed {seed}). "
            f"The loss is L = −mean_k cos(f(x), f(v_k)) over {GRADCAM_VIEWS} views v_k of the same image made with the pretraining "
            "augmentation (fixed seed, no gradient through the views); channel weights = spatial mean of −∂L/∂A over the last conv block's "
            f"maps A; CAM = ReLU(Σ w·A), bilinearly upsampled, each map scaled to its own maximum (red = high).{low_res}"
        )
        figs.append(Figure(id=fid, section="fig3", title=title, path=path, caption=caption, sources=sources))
        log.info("wrote %s", path)
    return figs


def reconstruction_lines(params: Params, models_root: Path) -> list[str]:
    seed = _seed0(params)
    return [
        f"- {d}/{e} (seed {seed}): " + reconstruction_text(RunPaths(d, e, seed).model_dir(models_root) / "train.json")
        for d, e in pair_experiments(params)
    ]


def reconstruction_text(train_json: Path) -> str:
    """One sentence on g(h)'s PSNR against the mean-image yardstick, from the pretrain stage's train.json."""
    rec = json.loads(train_json.read_text()).get("reconstruction") if train_json.is_file() else None
    if not rec:
        return f"No reconstruction PSNR: {train_json} has none (a run from before it was recorded: rerun its pretrain stage)."
    verdict = (
        "renders more than the mean image"
        if rec["gain_db"] >= 3
        else "does not beat the mean image by 3 dB: it renders little of the content"
    )
    return (
        f"Reconstruction on {rec['images']} test images ({rec['view']}): mean PSNR of g(h) {rec['psnr_db']:.2f} dB, of the mean "
        f"training image {rec['mean_image_psnr_db']:.2f} dB ({rec['gain_db']:+.2f} dB): g {verdict}."
    )


def fig_pairs(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    seed = _seed0(params)
    figs = []
    for dataset, exp in pair_experiments(params):
        src = RunPaths(dataset, exp, seed).model_dir(models_root) / "pairs.png"
        fid = f"fig4_pairs_{dataset}_{exp}"
        title = f"Fig. 4 analogue — {dataset}, {exp}"
        if not src.is_file():
            figs.append(
                Figure(id=fid, section="fig4", title=title, path=None, sources=[str(src)], caption=f"Not drawn: {src} does not exist.")
            )
            continue
        path = plots.save_png(plots.pairs_figure(src.read_bytes(), f"{dataset}: {exp} (seed {seed})"), fig_dir / f"{fid}.png")
        recon_text, sources = reconstruction_text(src.parent / "train.json"), [str(src), str(src.parent / "train.json")]
        figs.append(
            Figure(
                id=fid,
                section="fig4",
                title=title,
                path=path,
                sources=sources,
                caption=(
                    f"Generated pairs of <b>{exp}</b> (seed {seed}) at the end of pretraining: the pretrain stage's pairs.png, enlarged (pixels unchanged). "
                    "Each row: the augmented input view, its reconstruction g(h), and g(h̃) decoded from the feature with the "
                    f"selected non-discriminative dimensions perturbed. The pair (g(h), g(h̃)) should differ only in non-discriminative content. {recon_text}"
                ),
            )
        )
        log.info("wrote %s", path)
    return figs


def fig_alpha(params: Params, rows: list[Row], fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    index = _row_index(rows)
    panels, used = [], []
    for dataset in params.grid.datasets:
        series: dict[str, list] = {}
        for e in params.grid.experiments:
            if params.experiments[e].synth and not makes_pairs(params, e) and TOP1 in index[(dataset, e)]["values"]:
                m, sd = _mean_std(index[(dataset, e)]["values"][TOP1])
                series.setdefault(params.experiments[e].method, []).append((float(params.pretrain_for(e).alpha), m, sd, e))
                used.append(f"{dataset}/{e}")
        if not series:
            continue
        lines = []
        for method in series:
            for synth, style in ((False, "--"), (True, ":")):
                e = baseline_of(params, method, synth)
                if e is None or TOP1 not in index[(dataset, e)]["values"]:
                    continue
                if synth and not makes_pairs(params, e):
                    continue
                m, sd = _mean_std(index[(dataset, e)]["values"][TOP1])
                cfg = params.pretrain_for(e)
                label = f"{e} (baseline, L_C)" if not synth else f"{e} (full: α={cfg.alpha}, ν={cfg.nu})"
                lines.append(
                    {
                        "label": label,
                        "value": m,
                        "std": sd if len(index[(dataset, e)]["values"][TOP1]) > 1 else None,
                        "style": style,
                        "method": method,
                    }
                )
                used.append(f"{dataset}/{e}")
        panels.append({"dataset": dataset, "series": [{"method": k, "points": v} for k, v in series.items()], "lines": lines})
    fid = "fig5_alpha"
    title = "Fig. 5 analogue — reconstruction alone (L_C + α·L_R)"
    if not panels:
        caption = (
            "Not drawn: the grid has no experiment with synth: true and ν = 0 (L_C + α·L_R only). Add a few, e.g. in params.yaml "
            "(experiment names must not contain '.', since DVC reads them as params paths):"
            f"<pre>{html.escape(FIG5_HINT)}</pre>"
        )
        return [Figure(id=fid, section="fig5", title=title, path=None, caption=caption, sources=[])]
    path = plots.save_png(plots.alpha_sweep_figure(panels), fig_dir / f"{fid}.png")
    caption = (
        f"Linear top-1 (mean ± std over seeds {list(params.grid.seeds)}) of encoders trained with L_C + α·L_R only (synth: true, ν = 0), "
        "against α; dashed: the baseline (L_C only); dotted: the full method (L_C + α·L_R + ν·L_Cp), shaded ± std. "
        "If the α-only points stay near the baseline while the full method is above it, reconstruction alone does not explain the gain. "
        f"Experiments: {', '.join(used)}; effective α and ν from reports/params.resolved.json; numbers from their metrics files (see Provenance)."
    )
    log.info("wrote %s", path)
    return [Figure(id=fid, section="fig5", title=title, path=path, caption=caption, sources=[f"metrics of {u}" for u in used])]


def fig_curves(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    figs = []
    for dataset in params.grid.datasets:
        curves, sources = {}, []
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                live = RunPaths(dataset, e, seed).model_dir(models_root) / "live"
                c = plots.read_live_curves(live)
                if c:
                    curves.setdefault(e, {})[seed] = c
                    sources.append(str(live / "plots" / "metrics"))
        fid = f"curves_{dataset}"
        title = f"Training curves — {dataset}"
        if not curves:
            figs.append(
                Figure(id=fid, section="curves", title=title, path=None, sources=[], caption="Not drawn: no dvclive curves under models/.")
            )
            continue
        path = plots.save_png(plots.curves_figure(curves, f"{dataset}: training curves"), fig_dir / f"{fid}.png")
        figs.append(
            Figure(
                id=fid,
                section="curves",
                title=title,
                path=path,
                sources=sources,
                caption=(
                    "The learning monitor first (val/knn20_top1: kNN-20 top-1 of the validation images held out of the train split, "
                    "every pretrain.monitor_every_steps; never the test set), then every logged training term per step (dvclive, pretrain.log_every_steps): total loss, L_C (SSL loss), L_R (reconstruction, "
                    "module runs), L_Cp (SSL loss on the generated pair) and n_selected (number of perturbed dimensions); one colour per "
                    "experiment, one line style per seed. Experiments without training (method none) have no curves. "
                    "The same TSVs are mirrored to reports/curves/, declared as DVC plots: <code>dvc plots show</code>."
                ),
            )
        )
        log.info("wrote %s", path)
    return figs


def mirror_curves(params: Params, models_root: Path, dest: Path) -> list[Path]:
    """Copy every run's dvclive TSVs to <dest>/<dataset>/<experiment>/seed<k>/ unchanged: the directory
    dvc.yaml declares as plots (DVC plot definitions have no globs, and models/ holds non-plot files)."""
    written = []
    for dataset in params.grid.datasets:
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                src = RunPaths(dataset, e, seed).model_dir(models_root) / "live" / "plots" / "metrics"
                run_dest = RunPaths(dataset, e, seed).model_dir(dest)
                for tsv in sorted((src / "train").glob("*.tsv")):
                    written.append(atomic_write_bytes(run_dest / tsv.name, tsv.read_bytes()))
                for tsv in sorted((src / "val").glob("*.tsv")):  # the learning monitor
                    written.append(atomic_write_bytes(run_dest / "val" / tsv.name, tsv.read_bytes()))
    keep = {p.resolve() for p in written}
    if dest.is_dir():
        for p in sorted(dest.rglob("*"), reverse=True):  # files of runs no longer in the grid; then empty dirs
            if p.is_file() and p.resolve() not in keep:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    return written


def build_figures(
    params: Params,
    rows: list[Row],
    fig_dir: Path,
    log: logging.Logger,
    *,
    features_root: Path,
    models_root: Path,
    data_root: Path,
) -> list[Figure]:
    figs = (
        fig_variance(params, features_root, fig_dir, log)
        + fig_gradcam(params, data_root, models_root, fig_dir, log)
        + fig_pairs(params, models_root, fig_dir, log)
        + fig_alpha(params, rows, fig_dir, log)
        + fig_curves(params, models_root, fig_dir, log)
    )
    written = {Path(f["path"]).name for f in figs if f["path"] is not None}
    for stale in fig_dir.glob("*.png"):  # figures of datasets/experiments no longer in the grid
        if stale.name not in written:
            stale.unlink()
    return figs
