"""The report's figures (analogues of the paper's Figs. 2–5 and the training curves).

Every function here takes plain arrays/modules and returns a matplotlib Figure (Agg backend,
no display needed) or a tensor; `save_png` writes a figure atomically. What to draw from which
files is decided in `finesyn.report.figures`; the Grad-CAM maps are computed in `finesyn.eval.gradcam`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from finesyn.io import atomic_write_bytes  # noqa: E402

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8, "figure.dpi": 100})

# Curves that are not loss terms (or not comparable across runs) are left out of the curve figure.
CURVE_SKIP = ("lr", "images_per_s")


CURVE_ORDER = ("loss", "L_C", "L_R", "L_Cp", "n_selected")


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
        f"Fisher ratio\nalong v_min: {f['v_min']:.2f}\nalong v_max: {f['v_max']:.2f}",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"},
    )
    ax_top.set_title("two classes along v_min (x) and v_max (y), per-class density on each axis", fontsize=9)
    fig.suptitle(title, fontsize=12, y=1.02)
    return fig, s


def gradcam_figure(images: np.ndarray, columns: list[tuple[str, np.ndarray]], title: str):
    """Rows = images; first column the image (float (N,H,W,3) in [0,1]); then one CAM overlay per
    encoder (each map scaled to its own maximum)."""
    n = len(images)
    ncol = 1 + len(columns)
    fig, axes = plt.subplots(n, ncol, figsize=(1.9 * ncol, 1.9 * n + 0.6), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i], interpolation="nearest")
        for j, (_, cams) in enumerate(columns, start=1):
            cam = cams[i]
            peak = float(cam.max())
            axes[i, j].imshow(images[i], interpolation="nearest")
            axes[i, j].imshow(cam / peak if peak > 0 else cam, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            if peak <= 0:  # no location agrees with the other views more than the image's average
                axes[i, j].text(0.5, 0.5, "CAM = 0", transform=axes[i, j].transAxes, ha="center", va="center", color="white", fontsize=9)
    for j, name in enumerate(["test image"] + [c[0] for c in columns]):
        axes[0, j].set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- Fig. 4 analogue
def pairs_figure(png: bytes, title: str, columns: Sequence[str] = ("input view", r"$g(h)$", r"$g(\tilde{h})$"), padding: int = 2):
    """The pretrain stage's pairs.png (a torchvision grid, one row per sample, `len(columns)` images per
    row) shown enlarged with its columns labelled; the pixels are not resampled (nearest)."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w = img.shape[:2]
    scale = max(1.0, 360 / w)
    fig, ax = plt.subplots(figsize=(w * scale / 100 + 0.4, h * scale / 100 + 0.6))
    ax.imshow(img, interpolation="nearest")
    n = len(columns)
    cell = (w - padding) / n
    if cell == int(cell) and cell > padding:
        ax.set_xticks([padding + cell * i + (cell - padding) / 2 for i in range(n)], list(columns))
        ax.xaxis.tick_top()
    else:
        ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10, pad=30)
    return fig


# ----------------------------------------------------------------------------- Fig. 5 analogue
def alpha_sweep_figure(panels: list[dict]):
    """One panel per dataset: {"dataset", "series": [{"method", "points": [(alpha, mean, std, name)]}],
    "lines": [{"label", "value", "std", "style", "method"}]} -> linear top-1 vs α."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels):
        k = 0
        for s in panel["series"]:
            pts = sorted(s["points"])
            ax.errorbar(
                [p[0] for p in pts],
                [p[1] for p in pts],
                yerr=[p[2] for p in pts],
                marker="o",
                capsize=3,
                color=cmap(k),
                label=f"{s['method']}: L_C + α·L_R (ν = 0)",
            )
            k += 1
            for a, m, _, name in pts:
                ax.annotate(name, (a, m), textcoords="offset points", xytext=(4, 4), fontsize=7, color="0.35")
        for ln in panel["lines"]:
            ax.axhline(
                ln["value"],
                linestyle=ln["style"],
                color=cmap(k),
                label=ln["label"] + (f": {ln['value']:.2f} ± {ln['std']:.2f}" if ln.get("std") is not None else f": {ln['value']:.2f}"),
            )
            if ln.get("std"):
                ax.axhspan(ln["value"] - ln["std"], ln["value"] + ln["std"], color=cmap(k), alpha=0.07)
            k += 1
        alphas = [p[0] for s in panel["series"] for p in s["points"]]
        if alphas and min(alphas) > 0 and max(alphas) / min(alphas) >= 10:
            ax.set_xscale("log")
        elif alphas:
            ax.set_xlim(0, max(alphas) * 1.25)
        ax.set_xlabel("α (weight of L_R)")
        ax.set_ylabel("linear top-1 (%)")
        ax.set_title(panel["dataset"])
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8)  # below the axes: never over a point
    fig.tight_layout()
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


def curves_figure(curves: dict[str, dict[int, dict[str, tuple[np.ndarray, np.ndarray]]]], title: str):
    """curves: experiment -> seed -> metric -> (steps, values). One panel per metric (the learning
    monitor's val/ metrics first, then the loss terms), one colour per experiment, one line per seed."""
    metrics = sorted(
        {m for seeds in curves.values() for c in seeds.values() for m in c if m not in CURVE_SKIP},
        key=lambda m: (not m.startswith("val/"), CURVE_ORDER.index(m) if m in CURVE_ORDER else len(CURVE_ORDER), m),
    )
    if not metrics:
        metrics = ["(no curves)"]
    ncol = min(3, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.3 * nrow), squeeze=False)
    cmap = plt.get_cmap("tab10")
    handles = {}
    for k, metric in enumerate(metrics):
        ax = axes.flat[k]
        for i, (exp, seeds) in enumerate(curves.items()):
            for j, (_seed, c) in enumerate(sorted(seeds.items())):
                if metric not in c:
                    continue
                steps, values = c[metric]
                (line,) = ax.plot(
                    steps, values, color=cmap(i % 10), linestyle=("-", "--", ":", "-.")[j % 4], marker="." if len(steps) < 20 else None
                )
                handles.setdefault(exp, line)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="lower center", ncol=min(5, len(handles)), bbox_to_anchor=(0.5, -0.02), frameon=False
        )
    fig.suptitle(title + " (line style = seed: solid first, dashed second, ...)", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
