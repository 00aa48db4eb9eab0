"""The module's health in the report: per module run, what the decoded pair gives L_Cp to learn
(pairs/health.py, recorded by the pretrain stage in train.json) and its one-line reading."""

from __future__ import annotations

import html
from pathlib import Path

from finesyn.artifacts import read_json
from finesyn.config import Params
from finesyn.paths import RunPaths

HEADERS = (
    "run",
    "pixel gap: pair / random dims / 2 views / 2 images",
    "encoder cos: pair / random dims / 2 views / 2 images",
    "probe top-1: g(h) / real / chance",
    "g(h) PSNR − mean image's (dB)",
    "‖∇ν·L_Cp‖ / ‖∇L_C‖",
    "L_Cp pull / push",
)
INTRO = (
    "What the synthesized pair gives L_Cp to learn, measured at the end of each module run as a training step makes the pair "
    "(pairs/health.py): the mean |g(h) − g(h̃)| in [0, 1] pixels and the cos between the encoder's pooled features of the pair's "
    "halves, beside the same for as many random dimensions, two augmented views of one test image and two different test images (128 test images); "
    "the run's linear probe (lbfgs, fit on the real train images) on decoded test images g(h) against the real ones; g(h)'s PSNR "
    "over that of the mean training image (Fig. 4's yardstick); the gradient "
    "norm of ν·L_Cp on the encoder relative to L_C's; and for contrastive methods L_Cp's pull towards the pair's other half against its "
    "push away from the negatives (tangent gradient norms per query). The same numbers at every monitor point are in each run's "
    "live/plots/metrics/health/*.tsv (not among dvc.yaml's plots)."
)


def module_runs(params: Params) -> list[tuple[str, str]]:
    """(dataset, experiment) of the grid whose runs make pairs (module on, ν > 0)."""
    return [
        (d, e)
        for d in params.grid.datasets
        for e in params.grid.experiments
        if params.experiments[e].synth and params.pretrain_for(e).nu > 0
    ]


def collect(params: Params, models_root: Path) -> list[dict]:
    """One entry per module run and seed: {dataset, experiment, seed, health (None: train.json has none)}."""
    out = []
    for d, e in module_runs(params):
        for seed in params.grid.seeds:
            path = RunPaths(d, e, seed).model_dir(models_root) / "train.json"
            record = read_json(path) if path.is_file() else {}
            health = record.get("health")
            if health is not None and record.get("reconstruction"):
                health = {**health, "psnr_gain_db": record["reconstruction"]["gain_db"]}
            out.append({"dataset": d, "experiment": e, "seed": seed, "health": health, "source": str(path)})
    return out


def cells(entry: dict) -> list[str]:
    p, c = entry["health"]["pair"], entry["health"]["class"]
    four = lambda key: " / ".join(f"{p[f'{k}_{key}']:.3f}" for k in ("pair", "random_dims", "views", "images"))  # noqa: E731
    forces = f"{p['L_Cp_pull']:.3f} / {p['L_Cp_push']:.3f}" if "L_Cp_pull" in p else "– (no negatives)"
    return [
        f"{entry['dataset']}/{entry['experiment']} seed {entry['seed']}",
        four("pixel_gap"),
        four("cos"),
        f"{c['decoded_top1']:.1f} / {c['real_top1']:.1f} / {c['chance']:.1f}",
        f"{entry['health']['psnr_gain_db']:+.2f}" if "psnr_gain_db" in entry["health"] else "–",
        f"{p['grad_ratio_cp_to_c']:.2f}",
        forces,
    ]


def reading(health: dict) -> str:
    """The one-line reading of a run's health (report and log)."""
    p = health["pair"]
    share = 100 * p["pair_pixel_gap"] / max(p["views_pixel_gap"], 1e-12)
    rand = 100 * p["random_dims_pixel_gap"] / max(p["pair_pixel_gap"], 1e-12)
    c = health["class"]
    line = (
        f"the decoded pair differs by {share:.0f} % of what two augmented views of one image differ by "
        f"(cos {p['pair_cos']:.2f} between the pair vs {p['views_cos']:.2f} between two views); as many random dimensions "
        f"change the image {rand:.0f} % as much; the run's probe reads {c['decoded_top1']:.1f} % off g(h) vs {c['real_top1']:.1f} % off "
        f"the real images (chance {c['chance']:.1f} %); ν·L_Cp's gradient on the encoder is {p['grad_ratio_cp_to_c']:.2f}× L_C's"
    )
    if "L_Cp_pull" in p:
        line += f"; L_Cp pulls the pair together with {p['L_Cp_pull']:.3f} and pushes it off negatives with {p['L_Cp_push']:.3f}"
    verdict = "L_Cp sees near-duplicates" if share < 50 else "the pair differs as much as an augmentation does"
    return f"{line}: {verdict}."


def _reading(entry: dict) -> str:
    if entry["health"] is None:
        return f"{entry['dataset']}/{entry['experiment']} seed {entry['seed']}: no health in {entry['source']} (rerun its pretrain stage)."
    return f"{entry['dataset']}/{entry['experiment']} seed {entry['seed']}: {reading(entry['health'])}"


def to_markdown(entries: list[dict]) -> str:
    if not entries:
        return ""
    measured = [e for e in entries if e["health"] is not None]
    out = ["", "## The module's health", "", *[f"- {_reading(e)}" for e in entries], "", INTRO, ""]
    if measured:
        out += ["| " + " | ".join(HEADERS) + " |", "|---" * len(HEADERS) + "|"]
        out += ["| " + " | ".join(cells(e)) + " |" for e in measured]
        out.append("")
    return "\n".join(out)


def to_html(entries: list[dict]) -> list[str]:
    if not entries:
        return []
    h = ['<h3 id="module-health">The module\'s health</h3>', "<ul>"]
    h += [f"<li>{html.escape(_reading(e))}</li>" for e in entries]
    h += ["</ul>", f"<p>{html.escape(INTRO)}</p>"]
    measured = [e for e in entries if e["health"] is not None]
    if measured:
        h.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in HEADERS) + "</tr>")
        h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(e)) + "</tr>" for e in measured]
        h.append("</table>")
    return h


def add_to_summary(summary: dict, entries: list[dict]) -> dict:
    """results.json: `module health` -> {seed: the run's health record} under each module run's experiment."""
    for e in entries:
        if e["health"] is not None:
            cell = summary.setdefault(e["dataset"], {}).setdefault(e["experiment"], {})
            cell.setdefault("module health", {})[str(e["seed"])] = e["health"]
    return summary
