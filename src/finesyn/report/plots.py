"""The report's figures (analogues of the paper's Figs. 2–5 and the training curves).

Every function here takes plain arrays/modules and returns a matplotlib Figure (Agg backend,
no display needed) or a tensor; `save_png` writes a figure atomically. What to draw from which
files is decided in `finesyn.report.figures`; the Grad-CAM maps are computed in `finesyn.eval.gradcam`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from finesyn.io import atomic_write_bytes  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8, "figure.dpi": 100})

# Curves that are not loss terms (or not comparable across runs) are left out of the curve figure.
CURVE_SKIP = ("lr", "images_per_s")


CURVE_ORDER = ("L = L_C + α·L_R + ν·L_Cp", "L_C", "L_R", "L_Cp", "n_selected")
NATS = ("InfoNCE", "NT-Xent (InfoNCE)", "cross-entropy with the labels")  # log-likelihood losses, natural log


def curve_y_label(metric: str) -> str:
    """What a curve panel's y axis measures, from its metric name ('<term> — <kind of L_C>')."""
    base, _, kind = metric.partition(" — ")
    if base.startswith("val/") and "top1" in base:
        return "kNN top-1 on held-out train images (%)"
    if base == "L_R":
        return "L_R: MSE of g(h) to the view (normalised pixels)"
    if base == "n_selected":
        return "dimensions perturbed per image"
    if kind:
        return f"{kind} (nats)" if kind in NATS else kind
    return base


def save_png(fig, path: Path, dpi: int = 110) -> Path:
    """Render `fig` to PNG in memory and write it atomically; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- Fig. 2 analogue
def variance_stats(features: np.ndarray, labels: np.ndarray) -> dict:
    """Per-dimension variance over the data; the min/max-variance dimensions; the class pair.

    v_min is the lowest-variance dimension among those that are not constant (a dead ReLU channel
    has variance 0 and trivially separates nothing); the class pair is the two classes with the
    most samples (ties: lower label first).
    """
    features = np.asarray(features, dtype=np.float64)
    var = features.var(axis=0)
    alive = np.flatnonzero(var > 0)
    if len(alive) == 0:
        raise ValueError("every feature dimension is constant: nothing to plot")
    j_min = int(alive[np.argmin(var[alive])])
    j_max = int(np.argmax(var))
    classes, counts = np.unique(labels, return_counts=True)
    order = sorted(range(len(classes)), key=lambda i: (-counts[i], classes[i]))
    pair = tuple(int(classes[i]) for i in order[:2])
    fisher = {}
    for name, j in (("v_min", j_min), ("v_max", j_max)):
        a, b = (features[labels == c, j] for c in pair)
        within = (a.var() + b.var()) / 2
        fisher[name] = float((a.mean() - b.mean()) ** 2 / within) if within > 0 else float("inf")
    return {"var": var, "j_min": j_min, "j_max": j_max, "n_constant": int(len(var) - len(alive)), "pair": pair, "fisher": fisher}


def _density(ax, values: np.ndarray, color, orientation: str) -> None:
    """Gaussian KDE of one class along one axis (a histogram when the KDE is singular)."""
    from scipy.stats import gaussian_kde

    values = np.asarray(values, dtype=np.float64)
    if len(values) and np.ptp(values) == 0:  # every sample at one value: no density to fit, mark the value
        (ax.axvline if orientation == "vertical" else ax.axhline)(values[0], color=color, linewidth=2.5, alpha=0.8)
        return
    try:
        if len(values) < 3:
            raise np.linalg.LinAlgError
        kde = gaussian_kde(values)
        lo, hi = values.min(), values.max()
        pad = 0.25 * (hi - lo)
        grid = np.linspace(lo - pad, hi + pad, 200)
        dens = kde(grid)
        if orientation == "vertical":
            ax.fill_between(grid, dens, color=color, alpha=0.35)
            ax.plot(grid, dens, color=color)
        else:
            ax.fill_betweenx(grid, dens, color=color, alpha=0.35)
            ax.plot(dens, grid, color=color)
    except (np.linalg.LinAlgError, ValueError):
        ax.hist(values, bins=10, color=color, alpha=0.4, density=True, orientation=orientation)


def fmt_ratio(x: float) -> str:
    """Three significant digits: a Fisher ratio of 0.001 (the default's) must not print as 0.00."""
    return f"{x:.3g}"


def variance_figure(features: np.ndarray, labels: np.ndarray, title: str, class_names: Sequence[str] | None = None):
    """Left: sorted per-dimension variance; right: two classes along v_min (x) and v_max (y) with a
    per-class density on each axis. Returns (figure, stats)."""
    s = variance_stats(features, labels)
    var, j_min, j_max, pair = s["var"], s["j_min"], s["j_max"], s["pair"]
    fig = plt.figure(figsize=(11, 4.6))
    gs = fig.add_gridspec(2, 3, width_ratios=[1.25, 1.0, 0.28], height_ratios=[0.28, 1.0], wspace=0.12, hspace=0.08)
    ax_spec = fig.add_subplot(gs[:, 0])
    sorted_var = np.sort(var)
    ax_spec.semilogy(np.arange(len(var)), np.maximum(sorted_var, 1e-12), color="0.2")
    rank_min = int(np.searchsorted(sorted_var, var[j_min]))
    ax_spec.scatter([rank_min, len(var) - 1], [var[j_min], var[j_max]], color=["tab:blue", "tab:red"], zorder=3)
    ax_spec.annotate(f"v_min = dim {j_min}", (rank_min, var[j_min]), textcoords="offset points", xytext=(8, 6), color="tab:blue")
    ax_spec.annotate(
        f"v_max = dim {j_max}",
        (len(var) - 1, var[j_max]),
        textcoords="offset points",
        xytext=(-120, -30),
        color="tab:red",
        arrowprops={"arrowstyle": "-", "color": "tab:red"},
    )
    ax_spec.set_xlabel("feature dimension (sorted by variance)")
    ax_spec.set_ylabel("variance over test images (log)")
    note = f"\n{s['n_constant']} constant dims shown at 1e-12" if s["n_constant"] else ""
    ax_spec.set_title(f"per-dimension variance, d = {len(var)}{note}", fontsize=9)
    ax_spec.grid(alpha=0.3)

    ax = fig.add_subplot(gs[1, 1])
    ax_top = fig.add_subplot(gs[0, 1], sharex=ax)
    ax_right = fig.add_subplot(gs[1, 2], sharey=ax)
    colors = ("tab:orange", "tab:purple")
    for c, color in zip(pair, colors):
        m = labels == c
        name = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
        ax.scatter(features[m, j_min], features[m, j_max], s=14, alpha=0.75, color=color, label=f"{name} (n={int(m.sum())})")
        _density(ax_top, features[m, j_min], color, "vertical")
        _density(ax_right, features[m, j_max], color, "horizontal")
    ax.set_xlabel(f"h[{j_min}]  (v_min, variance {var[j_min]:.2g})")
    ax.set_ylabel(f"h[{j_max}]  (v_max, variance {var[j_max]:.2g})")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    ax_top.set_ylabel("density", fontsize=8)
    ax_right.set_xlabel("density", fontsize=8)
    ax_top.tick_params(labelbottom=False, labelsize=7)
    ax_right.tick_params(labelleft=False, labelsize=7)
    f = s["fisher"]
    ax.text(
        0.02,
        0.98,
        f"Fisher ratio\nalong v_min: {fmt_ratio(f['v_min'])}\nalong v_max: {fmt_ratio(f['v_max'])}",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
    )
    ax_top.set_title("two classes along v_min (x) and v_max (y), per-class density on each axis", fontsize=9)
    fig.suptitle(title, fontsize=12, y=1.02)
    return fig, s


def _outline(ax, masks, i: int) -> None:
    """The generator's marking (solid) and bird (dashed) outlines, at half coverage."""
    if masks is not None:
        ax.contour(masks[0][i], levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
        ax.contour(masks[1][i], levels=[0.5], colors="white", linewidths=1.2)


def gradcam_figure(images: np.ndarray, columns: list[tuple[str, np.ndarray]], title: str, row_labels=None, masks=None, shares=None):
    """Rows = images (labelled); first column the image (float (N,H,W,3) in [0,1]); then one CAM overlay per
    encoder (each map scaled to its own maximum; one colour bar). With the generator's (object, marking) masks:
    their outlines, and under each overlay the share of its mass on them (`shares`: {column: (object, marking)})."""
    n, ncol = len(images), 1 + len(columns)
    fig, axes = plt.subplots(n, ncol, figsize=(2.1 * ncol + 1.2, 2.15 * n + 0.6), squeeze=False, layout="constrained")
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        _outline(axes[i, 0], masks, i)
        axes[i, 0].set_ylabel("\n".join((row_labels[i] if row_labels else f"image {i}").split(" ", 1)), fontsize=7)
        for j, (name, cams) in enumerate(columns, start=1):
            cam, ax = cams[i], axes[i, j]
            peak = float(cam.max())
            ax.imshow(images[i], interpolation="nearest")
            ax.imshow(cam / peak if peak > 0 else cam, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            _outline(ax, masks, i)
            if peak <= 0:  # no location agrees with the other views more than the image's average
                ax.text(0.5, 0.5, "CAM = 0", transform=ax.transAxes, ha="center", va="center", color="white", fontsize=9)
            if shares and name in shares:
                o, m = (100 * float(v[i]) for v in shares[name])
                ax.set_xlabel(f"on bird {o:.1f}% · marking {m:.1f}%", fontsize=7)
    for j, name in enumerate(["test image" + (" (marking: solid)" if masks is not None else "")] + [c[0] for c in columns]):
        axes[0, j].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, 1), cmap="jet")
    fig.colorbar(mappable, ax=axes[:, 1:], shrink=0.5, label="CAM / its maximum (overlay, alpha 0.5)")
    fig.suptitle(title, fontsize=11)
    return fig


# ----------------------------------------------------------------------------- Fig. 4 analogue
PAIR_COLUMNS = ("input view", r"$g(h)$", r"$g(\tilde{h})$", r"$|g(h) - g(\tilde{h})|$" + "\n(scaled to the grid's max)")


def grid_tiles(img: np.ndarray, padding: int = 2, candidates: Sequence[int] = (4, 3)) -> np.ndarray:
    """The square tiles of a torchvision grid with white padding, (rows, columns, s, s, 3): the number of columns is
    the first candidate whose padding lines are white where that layout puts them (pairs.png has 4; older runs 3)."""
    h, w = img.shape[:2]
    for n in candidates:
        step, rest = divmod(w - padding, n)
        if rest or step <= padding or (h - padding) % step:
            continue
        rows, s = (h - padding) // step, step - padding
        lines = [k * step + d for k in range(max(n, rows) + 1) for d in range(padding)]
        if (img[:, [c for c in lines if c < w]] == 255).all() and (img[[r for r in lines if r < h]] == 255).all():
            at = [padding + k * step for k in range(max(n, rows))]
            return np.stack([np.stack([img[at[a] : at[a] + s, at[b] : at[b] + s] for b in range(n)]) for a in range(rows)])
    raise ValueError(f"not a grid of {' or '.join(map(str, candidates))} square tiles with {padding}-px white padding ({w}x{h} px)")


def pair_difference(tiles: np.ndarray) -> dict:
    """Mean and largest |g(h) − g(h̃)| over the grid's pixels and channels, in [0, 1] (8-bit PNG levels / 255)."""
    d = np.abs(tiles[:, 1].astype(np.float64) - tiles[:, 2].astype(np.float64)) / 255.0
    return {"mean": float(d.mean()), "max": float(d.max()), "rows": len(tiles)}


def pairs_figure(png: bytes, title: str, padding: int = 2):
    """The pretrain stage's pairs.png (a torchvision grid, one row per sample) shown enlarged with its columns
    labelled; the pixels are not resampled (nearest). Returns (figure, |g(h) − g(h̃)| statistics)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    tiles = grid_tiles(img, padding)
    h, w = img.shape[:2]
    n, scale = tiles.shape[1], max(1.0, 720 / w)
    fig, ax = plt.subplots(figsize=(w * scale / 100 + 0.4, h * scale / 100 + 0.8))
    ax.imshow(img, interpolation="nearest")
    step = (w - padding) / n
    ax.set_xticks([padding + step * i + (step - padding) / 2 for i in range(n)], list(PAIR_COLUMNS[:n]))
    ax.xaxis.tick_top()
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    if n == 4:  # the difference column's scale: white is the grid's largest channel-mean |g(h) − g(h̃)|
        top = float((np.abs(tiles[:, 1].astype(np.float64) - tiles[:, 2].astype(np.float64)).mean(-1) / 255.0).max())
        bar = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(0, top), cmap="gray")
        fig.colorbar(bar, ax=ax, orientation="horizontal", fraction=0.035, pad=0.02, aspect=40).set_label(
            r"last column: $|g(h) - g(\tilde{h})|$, mean over RGB, in [0, 1] pixel units (white = this grid's largest)", fontsize=8
        )
    return fig, pair_difference(tiles)


# ----------------------------------------------------------------------------- Fig. 5 analogue
def _alpha_series(ax, panel: dict, cmap) -> None:
    """Each method's α-only points joined to its baseline at α = 0 (a square, dashed across), error bars, names."""
    for k, s in enumerate(panel["series"]):
        pts = sorted(s["points"])
        x, y, err = ([p[i] for p in pts] for i in range(3))
        yerr = [e if e is not None else 0.0 for e in err]
        ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, color=cmap(k), label=f"{s['method']}: L_C + α·L_R (ν = 0)")
        for i, (a, m, _, name) in enumerate(pts):  # beside the point, towards the panel's inside: never cut by its edge
            last = i == len(pts) - 1 and i > 0
            ax.annotate(
                name,
                (a, m),
                textcoords="offset points",
                xytext=(-6 if last else 6, 5),
                ha="right" if last else "left",
                fontsize=7,
                color="0.3",
                bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 0.5},
            )
            if a == 0:
                ax.plot([a], [m], marker="s", ms=9, mfc="none", color=cmap(k))
                ax.axhline(m, linestyle="--", linewidth=0.9, color=cmap(k), label=f"{name}: {m:.2f}")


def _alpha_lines(ax, panel: dict, cmap) -> None:
    """The full method (dotted, shaded ± its error) and chance (dash-dot)."""
    for j, ln in enumerate(panel["lines"], start=len(panel["series"])):
        err = f" ± {ln['err']:.2f}" if ln["err"] is not None else ""
        ax.axhline(ln["value"], linestyle=":", linewidth=1.6, color=cmap(j), label=f"{ln['label']}: {ln['value']:.2f}{err}")
        if ln["err"]:
            ax.axhspan(ln["value"] - ln["err"], ln["value"] + ln["err"], color=cmap(j), alpha=0.1)
    if panel.get("chance"):
        ax.axhline(panel["chance"], linestyle="-.", color="0.45", linewidth=1, label=f"chance: {panel['chance']:.1f}")


def alpha_sweep_figure(panels: list[dict]):
    """One panel per dataset: {"dataset", "chance", "series": [{"method", "points": [(alpha, mean, error, name)]}],
    "lines": [{"label", "value", "err", "method"}]} -> linear top-1 vs α (α = 0: the baseline)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 5.6), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels):
        _alpha_series(ax, panel, cmap)
        _alpha_lines(ax, panel, cmap)
        alphas = sorted({p[0] for s in panel["series"] for p in s["points"] if p[0] > 0})
        if alphas and alphas[-1] / alphas[0] >= 10:  # log-like, with α = 0 in the linear part near the origin
            ax.set_xscale("symlog", linthresh=alphas[0], linscale=0.6)
            ax.set_xlim(-0.3 * alphas[0], alphas[-1] * 2.5)
        elif alphas:
            ax.set_xlim(-0.1 * alphas[-1], alphas[-1] * 1.2)
        ax.set_xlabel("α (weight of L_R; 0 = the baseline, L_C only)")
        ax.set_ylabel("linear top-1 (%)")
        ax.set_title(panel["dataset"])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8)  # below the axes: never over a point
    return fig


# ----------------------------------------------------------------------------- training curves
def read_live_curves(live_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """dvclive TSVs under live/plots/metrics/{train,val}/: {metric: (steps, values)}; the learning
    monitor's metrics keep their "val/" prefix."""
    import csv

    out = {}
    metrics = Path(live_dir) / "plots" / "metrics"
    tsvs = [(tsv, tsv.stem) for tsv in sorted((metrics / "train").glob("*.tsv"))]
    tsvs += [(tsv, f"val/{tsv.stem}") for tsv in sorted((metrics / "val").glob("*.tsv"))]
    for tsv, name in tsvs:
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if len(rows) < 2 or rows[0][0] != "step":
            continue
        col = rows[0].index(tsv.stem) if tsv.stem in rows[0] else 1
        steps = np.array([float(r[0]) for r in rows[1:]])
        values = np.array([float(r[col]) for r in rows[1:]])
        out[name] = (steps, values)
    return out


EXPERIMENT_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (3, 1, 1, 1)))
SEED_MARKERS = ("o", "s", "^", "D", "v")


def spread_labels(fractions: list[float], gap: float = 0.07) -> list[float]:
    """Label heights (axes fractions, in the order given) at least `gap` apart and inside [0, 1], each as near its line's end as that allows."""
    order = sorted(range(len(fractions)), key=lambda i: fractions[i])
    pos: list[float] = []
    for i in order:  # push up past the label below ...
        pos.append(max(fractions[i], pos[-1] + gap) if pos else fractions[i])
    for k in range(len(pos) - 1, -1, -1):  # ... then down from the top of the panel
        pos[k] = min(pos[k], 1.0 if k == len(pos) - 1 else pos[k + 1] - gap)
    out = [0.0] * len(fractions)
    for i, y in zip(order, pos):
        out[i] = y
    return out


def _label_line_ends(ax, ends: list[tuple[float, str, object]]) -> None:
    """Direct labels right of the panel at each experiment's last value, nudged apart so that none hides another."""
    lo, hi = ax.get_ylim()
    heights = spread_labels([(y - lo) / (hi - lo) for y, _, _ in ends])
    for (_, text, color), y in zip(ends, heights):
        ax.annotate(text, xy=(1.02, y), xycoords="axes fraction", color=color, fontsize=7, va="center", annotation_clip=False)


def _curve_panel(ax, metric: str, curves: dict, chance: dict[str, tuple[float, str]]) -> dict:
    """One metric: one colour and line style per experiment, one marker per seed; chance where it is known."""
    handles: dict[str, Line2D]
    ends: list[tuple[float, str, object]]
    cmap, handles, ends = plt.get_cmap("tab10"), {}, []
    for i, (exp, seeds) in enumerate(curves.items()):
        style = {"color": cmap(i % 10), "linestyle": EXPERIMENT_STYLES[i % len(EXPERIMENT_STYLES)], "linewidth": 1.4}
        for j, (_seed, c) in enumerate(sorted(seeds.items())):
            if metric in c:
                steps, values = c[metric]
                marker = {"marker": SEED_MARKERS[j % len(SEED_MARKERS)], "markevery": max(1, len(steps) // 8), "ms": 3.5}
                (line,) = ax.plot(steps, values, **style, **marker)
                handles.setdefault(exp, line)  # the legend shows the first seed's marker
                if j == 0:
                    ends.append((float(values[-1]), exp, style["color"]))
    if metric in chance:
        level, text = chance[metric]
        ax.axhline(level, color="0.35", linestyle=(0, (1, 1.5)), linewidth=1.2)
        ax.annotate(
            text, xy=(0.01, level), xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", fontsize=7, color="0.3"
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel(curve_y_label(metric), fontsize=8)
    ax.set_title(metric, fontsize=10)
    ax.grid(alpha=0.3)
    _label_line_ends(ax, ends)
    return handles


def _curve_order(metric: str) -> tuple:
    base = metric.split(" — ")[0]
    return (not metric.startswith("val/"), CURVE_ORDER.index(base) if base in CURVE_ORDER else len(CURVE_ORDER), metric)


def curves_figure(curves: dict[str, dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]], title: str, chance: dict | None = None):
    """curves: experiment -> seed -> metric -> (steps, values). One panel per metric (the learning monitor's val/
    metrics first, then the loss terms); experiments differ in colour and line style and are labelled at their
    line's end; seeds differ in marker; `chance`: {metric: (level, label)} drawn dotted grey."""
    metrics = sorted({m for seeds in curves.values() for c in seeds.values() for m in c if m not in CURVE_SKIP}, key=_curve_order)
    metrics = metrics or ["(no curves)"]
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.4 * nrow + 0.6), squeeze=False, layout="constrained")
    handles: dict = {}
    for ax, metric in zip(axes.flat, metrics):
        handles.update(_curve_panel(ax, metric, curves, chance or {}))
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(5, len(handles)), frameon=False)
    n_seeds = max((len(s) for s in curves.values()), default=0)
    fig.suptitle(title + (" (markers = seed: circle first, square second, ...)" if n_seeds > 1 else ""), fontsize=11)
    return fig
