"""Which files each figure is drawn from, and its caption (the drawing is in `finesyn.report.plots`)."""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import TypedDict, cast

from finesyn.artifacts import read_json
from finesyn.config import Params
from finesyn.paths import RunPaths
from finesyn.report.roles import baseline_of, first_baseline, makes_pairs, module_pairs, pair_experiments
from finesyn.report.rows import TOP1, Row, _row_index, chance_level, mean_and_error

GRADCAM_IMAGES = 6


GRADCAM_VIEWS = 8


FIG5_HINT = """experiments:
  mocov2_a001_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.01, nu: 0.0}}
  mocov2_a005_nu0: {method: mocov2, synth: true, overrides: {alpha: 0.05, nu: 0.0}}
  mocov2_a02_nu0:  {method: mocov2, synth: true, overrides: {alpha: 0.2, nu: 0.0}}
  mocov2_a1_nu0:   {method: mocov2, synth: true, overrides: {alpha: 1.0, nu: 0.0}}
grid:
  experiments: [random_init, mocov2, mocov2_synth, mocov2_a001_nu0, mocov2_a005_nu0, mocov2_a02_nu0, mocov2_a1_nu0]"""


def _fig5_missing(params: Params) -> str:
    """Why Fig. 5 is not drawn and the edit that draws it: name the α-only experiments params.yaml already
    defines (defining them again would be a duplicate key), or show how to define some."""
    defined = [e for e, x in params.experiments.items() if x.synth and params.pretrain_for(e).nu == 0]
    if defined:
        grid = [*params.grid.experiments, *(e for e in defined if e not in params.grid.experiments)]
        edit = "grid:\n  experiments: [" + ", ".join(grid) + "]"
        return (
            f"the grid runs no experiment with synth: true and ν = 0 (L_C + α·L_R only). params.yaml defines {len(defined)}: "
            "add their names to grid.experiments, keeping the reference rows (the budget check needs them):"
            f"<pre>{html.escape(edit)}</pre>"
        )
    return (
        "the grid has no experiment with synth: true and ν = 0 (L_C + α·L_R only). Define a few in params.yaml and add them "
        "to grid.experiments (experiment names must not contain '.', since DVC reads them as params paths):"
        f"<pre>{html.escape(FIG5_HINT)}</pre>"
    )


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
            f"(squared mean difference / mean within-class variance) is {plots.fmt_ratio(f['v_min'])} along v_min and {plots.fmt_ratio(f['v_max'])} along v_max."
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


def _not_drawn(fid: str, section: str, title: str, why: str, sources: list[str] | None = None) -> Figure:
    return Figure(id=fid, section=section, title=title, path=None, sources=sources or [], caption=f"Not drawn: {why}")


def generator_masks(ds, idx, crop: int):
    """(object, marking) coverages of cache rows `idx` from the generator that wrote the cache, centre-cropped
    as `eval_view` crops the images; None for a cache the generator did not write (real images)."""
    import re

    import numpy as np

    from finesyn.data.prepared import CacheError
    from finesyn.data.synthetic import GeneratorSettings, object_and_marking_masks

    found = [re.fullmatch(r"synthetic-(train|test)-(\d+)", ds.ids[i]) for i in idx]
    if ds.meta.get("kind") != "synthetic" or not isinstance(ds.meta.get("params"), dict) or not all(found):
        return None
    settings = GeneratorSettings.from_mapping(ds.meta["params"])
    matches = cast("list[re.Match[str]]", found)  # all(found), checked above
    masks = [object_and_marking_masks(m[1], [int(m[2])], settings) for m in matches]
    if any(int(ds.labels[i]) != int(m[2]) % settings.num_classes for i, m in zip(idx, matches)):
        raise CacheError(f"prepared dataset {ds.path}: labels disagree with the generator's settings in its meta.json (re-run prepare)")
    top = int(round((ds.image_size - crop) / 2.0))  # eval_view's centre crop
    return tuple(np.concatenate([m[k] for m in masks])[:, top : top + crop, top : top + crop] for k in (0, 1))


def _cams_of_pairs(params: Params, pairs, dataset: str, models_root: Path, x, views) -> tuple[list, list[str], set[str]]:
    """[(column name, CAMs)] of every baseline and +module encoder, their sources, the conv blocks used."""
    from finesyn.eval import gradcam
    from finesyn.eval.features import load_encoder

    cols, sources, layers = [], [], set()
    for base, mod in pairs:
        for exp in (base, mod):
            model_dir = RunPaths(dataset, exp, _seed0(params)).model_dir(models_root)
            backbone, _, state = load_encoder(model_dir)
            layer = gradcam.cam_layer(backbone, x.shape[-1])
            layers.add(layer)
            cam = gradcam.ssl_gradcam(backbone, x, views, layer).numpy()
            cols.append((f"{exp}" + ("" if layer == "layer4" else f" ({layer})"), cam))
            sources.append(f"{model_dir / 'encoder.pt'} (run {state.get('run_id')})")
    return cols, sources, layers


def gradcam_shares(cols, masks) -> dict[str, tuple]:
    """{column: (share of CAM mass on the object, on the marking)} per image, when the masks are known."""
    from finesyn.eval.gradcam import mass_on

    if masks is None:
        return {}
    return {name: (mass_on(cam, masks[0]), mass_on(cam, masks[1])) for name, cam in cols}


def _pct(v: float) -> str:
    return "–" if v != v else f"{100 * v:.1f}"  # NaN: an all-zero CAM


def shares_table(labels: list[str], masks, shares: dict[str, tuple]) -> str:
    """HTML: one row per Fig. 3 image, the area (%) of the bird and of its marking (what an even map would put on them)
    and each encoder's share (%) of CAM mass on them."""
    head = "".join(f"<th>{html.escape(n)}<br>on bird</th><th>{html.escape(n)}<br>on marking</th>" for n in shares)
    rows = []
    for i, label in enumerate(labels):
        area = f"<td>{_pct(masks[0][i].mean())}</td><td>{_pct(masks[1][i].mean())}</td>"
        cells = "".join(f"<td>{_pct(o[i])}</td><td>{_pct(m[i])}</td>" for o, m in shares.values())
        rows.append(f'<tr><td class="l">{html.escape(label)}</td>{area}{cells}</tr>')
    return (
        "<p>Per row of the figure: the bird's and the marking's area (% of the image: the share an even map would put on them) "
        "and each encoder's share of Grad-CAM mass on them (% of the map's total).</p>"
        '<div class="wide"><table class="shares"><tr><th>row: image (class)</th><th>bird area</th><th>marking area</th>'
        + head + "</tr>" + "".join(rows) + "</table></div>"
    )  # fmt: skip


def fig_gradcam(params: Params, data_root: Path, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    import numpy as np
    import torch

    from finesyn.data.augment import denormalize, eval_view
    from finesyn.data.prepared import open_cache
    from finesyn.eval import gradcam
    from finesyn.report import plots

    pairs, seed, figs = module_pairs(params), _seed0(params), []
    for dataset in params.grid.datasets:
        fid, title = f"fig3_gradcam_{dataset}", f"Fig. 3 analogue — {dataset}"
        if not pairs:
            why = "the grid needs a baseline and its +module experiment (e.g. mocov2 and mocov2_synth: same method, synth false/true, no overrides)."
            figs.append(_not_drawn(fid, "fig3", title, why))
            continue
        ds, crop = open_cache(data_root / dataset), params.datasets[dataset].crop_size
        idx = _gradcam_indices(ds.labels, ds.indices("test"), GRADCAM_IMAGES)
        raw = torch.from_numpy(np.ascontiguousarray(ds.images[idx]))
        views = gradcam.augmented_views(raw, params.pretrain.augment, crop, GRADCAM_VIEWS, seed=0)
        x = eval_view(raw, crop)
        cols, sources, layers = _cams_of_pairs(params, pairs, dataset, models_root, x, views)
        masks = generator_masks(ds, idx, crop)
        shares = gradcam_shares(cols, masks)
        labels = [f"{ds.ids[i]} ({ds.classes[ds.labels[i]]})" for i in idx]
        images = denormalize(x).permute(0, 2, 3, 1).numpy()
        fig = plots.gradcam_figure(images, cols, f"{dataset}: SSL-induced Grad-CAM, seed {seed}", labels, masks, shares)
        path = plots.save_png(fig, fig_dir / f"{fid}.png")
        caption = _fig3_caption(pairs, seed, layers, crop, masks) + (shares_table(labels, masks, shares) if shares else "")
        sources.insert(0, f"{data_root / dataset} (test images {', '.join(ds.ids[i] for i in idx)})")
        figs.append(Figure(id=fid, section="fig3", title=title, path=path, caption=caption, sources=sources))
        log.info("wrote %s", path)
    return figs


def _fig3_caption(pairs, seed: int, layers: set[str], crop: int, masks) -> str:
    layer_text = ", ".join(sorted(layers))
    low_res = (
        ""
        if layers == {"layer4"}
        else f" At this input size ({crop} px) layer4's maps are smaller than 4×4, so the deepest block with maps at least 4×4 ({layer_text}) is used."
    )
    truth = (
        " The generator knows where the bird and its class-defining marking are: the marking is outlined in white (solid), the bird "
        "in white (dashed), and under each map, and in the table below, is the share of the map's mass on the bird and on the marking "
        "(a map spread evenly would put their area share there). This map explains what makes the views agree, which need not be what "
        "decides the class: docs/findings.md compares it, over all test images, with the map of the linear probe's class logit "
        "(studies/gradcam_marking.py)."
        if masks is not None
        else " These are real images: where the detail that decides the class lies is not known, so no share of the map is measured."
    )
    return (
        f"Spatial Grad-CAM on {GRADCAM_IMAGES} test images (centre crops; one per class where possible; each row names its image and class), "
        f"baseline vs +module encoders ({'; '.join(f'{b} vs {m}' for b, m in pairs)}; seed {seed}). "
        f"The loss is L = −mean_k cos(f(x), f(v_k)) over {GRADCAM_VIEWS} views v_k of the same image made with the pretraining "
        "augmentation (fixed seed, no gradient through the views), with f(x) pooled from the last conv block's maps A by the encoder's own "
        "global pool (as the probes see it); channel weights = spatial mean of −∂L/∂A; "
        f"CAM = ReLU(Σ w·A), bilinearly upsampled, each map scaled to its own maximum (colour bar).{low_res}{truth}"
    )


def reconstruction_lines(params: Params, models_root: Path) -> list[str]:
    seed = _seed0(params)
    return [
        f"- {d}/{e} (seed {seed}): " + reconstruction_text(RunPaths(d, e, seed).model_dir(models_root) / "train.json")
        for d, e in pair_experiments(params)
    ]


def reconstruction_text(train_json: Path) -> str:
    """One sentence on g(h)'s PSNR against the mean-image yardstick, from the pretrain stage's train.json."""
    return reconstruction_verdict(train_json)[0]


def reconstruction_verdict(train_json: Path) -> tuple[str, bool]:
    """(reconstruction_text's sentence, whether g(h) beats the mean image by 3 dB; False when unmeasured)."""
    rec = read_json(train_json).get("reconstruction") if train_json.is_file() else None
    if not rec:
        return f"No reconstruction PSNR: {train_json} has none (a run from before it was recorded: rerun its pretrain stage).", False
    renders = rec["gain_db"] >= 3
    verdict = "renders more than the mean image" if renders else "does not beat the mean image by 3 dB: it renders little of the content"
    return (
        f"Reconstruction on {rec['images']} test images ({rec['view']}): mean PSNR of g(h) {rec['psnr_db']:.2f} dB, of the mean "
        f"training image {rec['mean_image_psnr_db']:.2f} dB ({rec['gain_db']:+.2f} dB): g {verdict}."
    ), renders


def _warn_box(text: str, renders: bool) -> str:
    """A reconstruction that renders little (or was not measured) is a warning: shown in the report's note box."""
    return html.escape(text) if renders else f'<div class="note">{html.escape(text)}</div>'


def _fig4_caption(exp: str, seed: int, diff: dict, recon: tuple[str, bool]) -> str:
    return (
        f"Generated pairs of <b>{exp}</b> (seed {seed}) at the end of pretraining: the pretrain stage's pairs.png, enlarged (pixels "
        "unchanged). Each row: the augmented input view, its reconstruction g(h), g(h̃) decoded from the feature with the selected "
        "non-discriminative dimensions perturbed, and |g(h) − g(h̃)| (mean over RGB, scaled so that the grid's largest difference is "
        "white; absent in a run from before it was drawn). The pair (g(h), g(h̃)) should differ only in non-discriminative content. "
        f"Measured on the PNG's {diff['rows']} rows: |g(h) − g(h̃)| is {diff['mean']:.4f} on average and at most {diff['max']:.4f} "
        f"(pixel values in [0, 1]). {_warn_box(*recon)}"
    )


def fig_pairs(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    seed = _seed0(params)
    figs = []
    for dataset, exp in pair_experiments(params):
        src = RunPaths(dataset, exp, seed).model_dir(models_root) / "pairs.png"
        fid, title = f"fig4_pairs_{dataset}_{exp}", f"Fig. 4 analogue — {dataset}, {exp}"
        if not src.is_file():
            figs.append(_not_drawn(fid, "fig4", title, f"{src} does not exist.", [str(src)]))
            continue
        fig, diff = plots.pairs_figure(src.read_bytes(), f"{dataset}: {exp} (seed {seed})")
        path = plots.save_png(fig, fig_dir / f"{fid}.png")
        caption = _fig4_caption(exp, seed, diff, reconstruction_verdict(src.parent / "train.json"))
        figs.append(
            Figure(id=fid, section="fig4", title=title, path=path, sources=[str(src), str(src.parent / "train.json")], caption=caption)
        )
        log.info("wrote %s", path)
    return figs


def _top1(index, dataset: str, e: str | None):
    """(mean, error bar) of a grid row's linear top-1, or None when the row or the column is missing."""
    row = index.get((dataset, e))
    return mean_and_error(row, TOP1) if row is not None and TOP1 in row["values"] else None


def _alpha_panel(params: Params, index, dataset: str) -> tuple[dict | None, list[str]]:
    """One dataset's Fig. 5 panel: per method, the α-only points plus the baseline at α = 0; the full method as a line."""
    series: dict[str, list] = {}
    used = []
    for e in params.grid.experiments:
        if params.experiments[e].synth and not makes_pairs(params, e) and _top1(index, dataset, e):
            series.setdefault(params.experiments[e].method, []).append((float(params.pretrain_for(e).alpha), *_top1(index, dataset, e), e))
            used.append(f"{dataset}/{e}")
    if not series:
        return None, []
    lines = []
    for method, points in series.items():
        base, full = baseline_of(params, method, False), baseline_of(params, method, True)
        if _top1(index, dataset, base):
            points.append((0.0, *_top1(index, dataset, base), f"{base} (α = 0)"))
            used.append(f"{dataset}/{base}")
        if full is not None and makes_pairs(params, full) and _top1(index, dataset, full):
            m, err = _top1(index, dataset, full)
            cfg = params.pretrain_for(full)
            lines.append({"label": f"{full} (full: α={cfg.alpha}, ν={cfg.nu})", "value": m, "err": err, "method": method})
            used.append(f"{dataset}/{full}")
    panel = {"dataset": dataset, "chance": chance_level(params, dataset), "series": [{"method": k, "points": v} for k, v in series.items()]}
    return {**panel, "lines": lines}, used


def fig_alpha(params: Params, rows: list[Row], fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    index = _row_index(rows)
    made = [_alpha_panel(params, index, d) for d in params.grid.datasets]
    panels, used = [p for p, _ in made if p is not None], [u for _, us in made for u in us]
    fid, title = "fig5_alpha", "Fig. 5 analogue — reconstruction alone (L_C + α·L_R)"
    if not panels:
        return [_not_drawn(fid, "fig5", title, _fig5_missing(params))]
    path = plots.save_png(plots.alpha_sweep_figure(panels), fig_dir / f"{fid}.png")
    seeds = params.grid.seeds
    bars = (
        f"mean ± sample std over seeds {', '.join(map(str, seeds))}"
        if len(seeds) > 1
        else f"seed {seeds[0]}; error bars: binomial standard error on the test images"
    )
    caption = (
        f"Linear top-1 ({bars}) of encoders trained with L_C + α·L_R only (synth: true, ν = 0), against α; the square at α = 0 is the "
        "baseline (L_C only, also dashed across); dotted: the full method (L_C + α·L_R + ν·L_Cp), shaded ± its error; dash-dot: chance. "
        "If the α-only points stay near the baseline while the full method is above it, reconstruction alone does not explain the gain. "
        f"Experiments: {', '.join(used)}; effective α and ν from reports/params.resolved.json; numbers from their metrics files (see Provenance)."
    )
    log.info("wrote %s", path)
    return [Figure(id=fid, section="fig5", title=title, path=path, caption=caption, sources=[f"metrics of {u}" for u in used])]


TOTAL = "L = L_C + α·L_R + ν·L_Cp"  # the total's panel title (module runs)


def loss_kind(method: str) -> str:
    """What a method's L_C is, as its registry entry says (`SSLMethod.loss_kind`)."""
    from finesyn.methods import METHODS  # torch: imported where curves are drawn, not by `python -m finesyn.report`

    return METHODS[method].loss_kind if method in METHODS else method


def _by_loss_kind(params: Params, experiment: str, curves: dict) -> dict:
    """A run's curves with loss, L_C and L_Cp renamed by the kind of its L_C (one panel per kind, never a
    cross-entropy beside an InfoNCE). The total is drawn for module runs only, titled by what it sums; any
    other run's total is its L_C, shown once."""
    method, synth = params.experiments[experiment].method, params.experiments[experiment].synth
    kind = loss_kind(method)
    out = {}
    for metric, curve in curves.items():
        if metric == "loss" and not synth:
            continue
        name = TOTAL if metric == "loss" else metric
        out[f"{name} — {kind}" if metric in ("loss", "L_C", "L_Cp") else metric] = curve
    return out


def _curve_chance(params: Params, dataset: str, metrics) -> dict[str, tuple[float, str]]:
    """Chance levels that are known: the monitor's kNN top-1 (100 / classes) and the labels' cross-entropy (ln classes)."""
    import math

    level = chance_level(params, dataset)
    if level is None:
        return {}
    n = round(100 / level)
    out = {m: (level, f"chance {level:.1f}%") for m in metrics if m.startswith("val/") and "top1" in m}
    ce = f"L_C — {loss_kind('supervised')}"
    if ce in metrics:
        out[ce] = (math.log(n), f"chance: ln {n} = {math.log(n):.2f}")
    return out


def fig_curves(params: Params, models_root: Path, fig_dir: Path, log: logging.Logger) -> list[Figure]:
    from finesyn.report import plots

    figs = []
    for dataset in params.grid.datasets:
        curves: dict[str, dict[int, dict]]  # experiment -> seed -> metric -> (steps, values)
        sources: list[str]
        curves, sources = {}, []
        for e in params.grid.experiments:
            for seed in params.grid.seeds:
                live = RunPaths(dataset, e, seed).model_dir(models_root) / "live"
                c = plots.read_live_curves(live)
                if c:
                    curves.setdefault(e, {})[seed] = _by_loss_kind(params, e, c)
                    sources.append(str(live / "plots" / "metrics"))
        fid, title = f"curves_{dataset}", f"Training curves — {dataset}"
        if not curves:
            figs.append(_not_drawn(fid, "curves", title, "no dvclive curves under models/."))
            continue
        chance = _curve_chance(params, dataset, {m for s in curves.values() for c in s.values() for m in c})
        path = plots.save_png(plots.curves_figure(curves, f"{dataset}: training curves", chance), fig_dir / f"{fid}.png")
        figs.append(Figure(id=fid, section="curves", title=title, path=path, sources=sources, caption=CURVES_CAPTION))
        log.info("wrote %s", path)
    return figs


CURVES_CAPTION = (
    "The learning monitor first (val/knn20_top1: kNN-20 top-1 of the validation images held out of the train split, "
    "every pretrain.monitor_every_steps; never the test set; dotted: chance), then every logged training term per step (dvclive, "
    "pretrain.log_every_steps): the total L = L_C + α·L_R + ν·L_Cp of module runs (any other run's total is its L_C), L_C (SSL "
    "loss), L_R (reconstruction, module runs), L_Cp (SSL loss on the generated pair) "
    "and n_selected (number of perturbed dimensions). Loss terms are split by what L_C is (cross-entropy with the labels for the "
    "supervised row; InfoNCE for MoCo v2; ...): their values are not on one scale. Dotted on the "
    "cross-entropy panel: chance, ln(number of classes), the loss of a uniform prediction; InfoNCE has no fixed chance level (a uniform "
    "prediction scores ln(1 + negatives), and MoCo's queue grows during training). One colour and line style per experiment, "
    "named at its line's end; one marker per seed. Experiments without training (method none) have no curves. "
    "The same curves, every run in one file per term, are in reports/curves/, declared as DVC plots: <code>dvc plots show</code>."
)


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
