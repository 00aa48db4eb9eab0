"""reports/index.html: one self-contained file, one function per section."""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from finesyn.config import Params
from finesyn.report.figures import Figure
from finesyn.report.roles import ablations
from finesyn.report.rows import (
    MODULE_EFFECT_HEADERS,
    MODULE_EFFECT_INTRO,
    TOP1,
    Row,
    _cells,
    _delta_top1,
    _protocol_text,
    _row_index,
    budget_verdict,
    chance_level,
    columns,
    effect_verdict,
    headline,
    missing_references,
    module_effect_cells,
    module_effects,
    retrieval_check,
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;color:#222;line-height:1.45}
h1{margin-bottom:4px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px} th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child,td.l{text-align:left}
figure{margin:16px 0 28px} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:14px;color:#333;margin-top:6px}
.src{font-size:12px;color:#666} .note{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px}
.wide{overflow-x:auto} table.prov td{white-space:normal;word-break:break-all;font-size:12px} table.prov td.nw{white-space:nowrap;word-break:normal}
code,pre{background:#f6f6f6;font-size:12px} pre{padding:8px;overflow-x:auto} .pos{color:#1a7f37} .neg{color:#b3261e}
.check{border:2px solid;border-left-width:8px;border-radius:4px;padding:10px 14px;margin:12px 0 20px;font-size:15px}
.check.ok{border-color:#1a7f37;background:#eef8f0} .check.warn{border-color:#b3261e;background:#fdeeee} .check strong{display:block;margin-bottom:4px}
.note{margin:6px 0} table.shares{font-size:13px}
"""


def _e(s) -> str:
    return html.escape(str(s))


def as_text(value) -> str:
    """A list, dict or setting as prose (never a Python repr): lists comma-separated, dicts as "key: value; ..."."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {as_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(as_text(v) for v in value)
    return str(value)


def _md_code(text: str) -> str:
    """Escape, then render Markdown `code` spans as <code>."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", _e(text))


def _anchor(dataset: str, experiment: str) -> str:
    return "src-" + re.sub(r"[^A-Za-z0-9_-]", "_", f"{dataset}-{experiment}")


def _tooltip(row: Row) -> str:
    return "; ".join(
        f"seed {s['seed']}: " + ", ".join(s["files"]) + f" (params {', '.join(f'{k}={v}' for k, v in s['params_hash'].items())})"
        for s in row["sources"]
    )


def _html_row(row: Row, headers: list[str], extra_before: Sequence[str] = (), extra_after: Sequence[str] = ()) -> str:
    link = f'<a href="#{_anchor(row["dataset"], row["experiment"])}">{_e(row["experiment"])}</a>'
    tip = _e(_tooltip(row))
    cells = "".join(f'<td title="{tip}">{_e(c)}</td>' for c in _cells(row, headers))
    return (
        "<tr><td>"
        + link
        + "</td>"
        + "".join(f'<td class="l">{c}</td>' for c in extra_before)
        + cells
        + "".join(f"<td>{c}</td>" for c in extra_after)
        + "</tr>"
    )


def _rel(path: str | Path, out: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out.resolve())).as_posix()


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


SECTIONS = [
    ("fig2", "Fig. 2 analogue: feature variance and class separation"),
    ("fig3", "Fig. 3 analogue: spatial Grad-CAM, baseline vs +module"),
    ("fig4", "Fig. 4 analogue: generated pairs (input, g(h), g(h̃))"),
    ("fig5", "Fig. 5 analogue: linear top-1 vs α with reconstruction only"),
    ("curves", "Training curves"),
]


def to_html(
    params: Params,
    rows: list[Row],
    figs: list[Figure],
    out: Path,
    refs: list[dict] | None = None,
    settings: dict | None = None,
    evidence: Sequence[str] = (),
    health: Sequence[str] = (),
) -> str:
    """`evidence`: the HTML of report.attention, placed after Fig. 3 (whose question it answers on every test image);
    `health`: report.health's, after Fig. 4's pairs."""
    effects = module_effects(params, rows)
    h = _head(params, rows, refs, bool(effects)) + _results(params, rows) + _module_effect(effects) + _ablations(params, rows)
    h += _references(refs, rows, params)
    h += _figures(figs, out, {"fig3": list(evidence), "fig4": list(health)}) + _provenance(rows, out, settings) + ["</body></html>"]
    return "\n".join(h) + "\n"


def _head(params: Params, rows: list[Row], refs, has_effects: bool) -> list[str]:
    from finesyn.provenance import params_hash

    code = sorted({str(s["code_version"]) for r in rows for s in r["sources"]})
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>finesyn report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>finesyn report</h1>",
        *[f"<p><strong>{_md_code(headline(params, rows, d))}</strong></p>" for d in params.grid.datasets],
        f"<p>Self-supervised fine-grained learning with synthesized pairs (re-implementation of Wang et al., ECCV 2024). "
        f"Grid: datasets {_e(as_text(params.grid.datasets))} × experiments {_e(as_text(params.grid.experiments))} × "
        f"seeds {_e(as_text(params.grid.seeds))}; "
        f"code version {_e(', '.join(code))}; grid params hash <code>{params_hash(params.grid.model_dump(mode='json'))}</code>.</p>",
        f"<p>{_md_code(_protocol_text(params))} Hover a number for its metrics files and params hashes; the experiment name links to its provenance.</p>",
        '<nav><a href="#results">Results</a>'
        + (' · <a href="#module-effect">The module\'s effect</a>' if has_effects else "")
        + (' · <a href="#ablations">Ablations</a>' if ablations(params) else "")
        + (' · <a href="#reference">Reference numbers</a>' if refs else "")
        + "".join(f' · <a href="#{sid}">{_e(t.split(":")[0])}</a>' for sid, t in SECTIONS)
        + ' · <a href="#provenance">Provenance</a></nav>',
    ]


def _results(params: Params, rows: list[Row]) -> list[str]:
    headers = [h for h, _, _ in columns(params)]
    h = ['<h2 id="results">Results</h2>']
    for dataset in params.grid.datasets:
        chance = chance_level(params, dataset)
        h.append(f"<h3>{_e(dataset)}" + (f" (chance: {chance:.1f}%)" if chance else "") + "</h3>")
        h.append("<table><tr><th>experiment</th>" + "".join(f"<th>{_e(c)}</th>" for c in headers) + "</tr>")
        h += [_html_row(r, headers) for r in rows if r["dataset"] == dataset]
        h.append("</table>")
        verdict, missing = budget_verdict(params, rows, dataset), missing_references(params, rows, dataset)
        if verdict:
            h.append(budget_box(*verdict))
        elif missing:
            h.append(
                f'<div class="check warn" role="note"><strong>No budget check</strong>{_md_code(missing.removeprefix("No budget check"))}</div>'
            )
        retrieval = retrieval_check(params, rows, dataset)
        if retrieval:
            h.append(
                f'<div class="check warn" role="note"><strong>Retrieval check</strong>{_md_code(retrieval.removeprefix("Retrieval check:"))}</div>'
            )
    return h


def budget_box(check: str, learns: bool) -> str:
    """The budget check, the first thing to read under the table, in a box coloured by its verdict."""
    head = "Budget check: training learns on this data" if learns else "Budget check: even the labels do not help — read no SSL row"
    return f'<div class="check {"ok" if learns else "warn"}" role="note"><strong>{_e(head)}</strong>{_md_code(check.removeprefix("Budget check: "))}</div>'


def _module_effect(effects: list[dict]) -> list[str]:
    """The paired module − baseline differences (`module_effects`; the same table as results.md)."""
    if not effects:
        return []
    h = ['<h2 id="module-effect">The module\'s effect</h2>']
    h += [f"<p><strong>Verdict:</strong> {_e(effect_verdict(e))}</p>" for e in effects if e["metric"] == TOP1]
    h.append(f"<p>{_e(MODULE_EFFECT_INTRO)}</p>")
    h.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in MODULE_EFFECT_HEADERS) + "</tr>")
    h += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in module_effect_cells(e)) + "</tr>" for e in effects]
    return h + ["</table>"]


def _ablations(params: Params, rows: list[Row]) -> list[str]:
    headers, index, h = [h for h, _, _ in columns(params)], _row_index(rows), []
    abl = ablations(params)
    if abl:
        h.append('<h2 id="ablations">Ablations</h2>')
        h.append(
            "<p>Experiments that differ from a baseline (same method and synth flag, no overrides) only by <code>overrides</code>; "
            "Δ top-1 = the experiment's linear top-1 − the baseline's (means over seeds).</p>"
        )
        for dataset in params.grid.datasets:
            h.append(f"<h3>{_e(dataset)}</h3>")
            h.append(
                '<div class="wide"><table><tr><th>experiment</th><th>baseline</th><th>overrides</th>'
                + "".join(f"<th>{_e(c)}</th>" for c in headers)
                + "<th>Δ top-1</th></tr>"
            )
            for a in abl:
                row = index[(dataset, a["experiment"])]
                ref = index.get((dataset, a["reference"])) if a["reference"] else None
                h.append(
                    _html_row(
                        row,
                        headers,
                        [_e(a["reference"] or "(not in grid)"), f"<code>{_e(a['overrides'])}</code>"],
                        [_e(_delta_top1(row, ref))],
                    )
                )
            h.append("</table></div>")
    return h


def _references(refs, rows: list[Row], params: Params) -> list[str]:
    index, h = _row_index(rows), []
    if refs:
        h.append('<h2 id="reference">Reference numbers</h2>')
        h.append(
            f"<p>From <code>{_e(params.report.reference_numbers)}</code> (supplied by the user; nothing here is built in). Difference = ours − reference.</p>"
        )
        h.append(
            "<table><tr><th>dataset</th><th>experiment</th><th>metric</th><th>reference</th><th>ours</th><th>difference</th><th>note</th></tr>"
        )
        for c in refs:
            if c["diff"] is None:
                diff = "– (not in the grid)"
            else:
                diff = f'<span class="{"pos" if c["diff"] >= 0 else "neg"}">{c["diff"]:+.2f}</span>'
            exp = c["experiment"]
            exp_cell = f'<a href="#{_anchor(c["dataset"], exp)}">{_e(exp)}</a>' if (c["dataset"], exp) in index else _e(exp)
            note = _e("; ".join(f"{k}: {v}" for k, v in c["extra"].items()))
            h.append(
                f'<tr><td class="l">{_e(c["dataset"])}</td><td class="l">{exp_cell}</td><td class="l">{_e(c["metric"])}</td>'
                f'<td>{c["value"]:.2f}</td><td>{_e(c["ours_text"])}</td><td>{diff}</td><td class="l">{note}</td></tr>'
            )
        h.append("</table>")
    return h


def _figures(figs: list[Figure], out: Path, after: dict[str, list[str]]) -> list[str]:
    """Each section's figures, then the HTML `after` holds for it."""
    h = []
    for sid, stitle in SECTIONS:
        h.append(f'<h2 id="{sid}">{_e(stitle)}</h2>')
        for f in (f for f in figs if f["section"] == sid):
            h.append(f'<figure id="{_e(f["id"])}"><h3>{_e(f["title"])}</h3>')
            if f["path"] is not None:
                h.append(_img_tag(f["path"], f["title"]))
            h.append(
                f"<figcaption>{'' if f['path'] is not None else '<div class=note>'}{f['caption']}{'' if f['path'] is not None else '</div>'}"
            )
            if f["path"] is not None:
                h.append(
                    f'<div class="src">File: <code>{_e(_rel(f["path"], out))}</code>.'
                    + (" Made from: " + "; ".join(f"<code>{_e(s)}</code>" for s in f["sources"]) if f["sources"] else "")
                    + "</div>"
                )
            h.append("</figcaption></figure>")
        h += after.get(sid, [])
    return h


def _provenance(rows: list[Row], out: Path, settings: dict | None) -> list[str]:
    h = []
    h.append('<h2 id="provenance">Provenance</h2>')
    h.append(
        "<p>Each row's numbers, per seed: the metrics files (links relative to this report), the params hash each records, "
        "the encoder run id and the code version. Effective pretrain settings of each run: <code>reports/params.resolved.json</code>.</p>"
    )
    h.append(
        '<div class="wide"><table class=prov><tr><th>dataset / experiment</th><th>seed</th><th>metrics files</th><th>params hash</th><th>encoder run</th><th>code</th></tr>'
    )
    protocols: dict[str, list[str]] = {}
    for row in rows:
        for i, s in enumerate(row["sources"]):
            first = f' id="{_anchor(row["dataset"], row["experiment"])}"' if i == 0 else ""
            links = "<br>".join(f'<a href="{_e(_rel(p, out))}">{_e(p)}</a>' for p in s["files"])
            hashes = "<br>".join(f"{_e(k)}: <code>{_e(v)}</code>" for k, v in s["params_hash"].items())
            for k, v in s["protocol"].items():
                protocols.setdefault(f"{k}: {as_text(v)}", []).append(f"{row['dataset']}/{row['experiment']}/seed{s['seed']}")
            h.append(
                f'<tr{first}><td class="l nw">{_e(row["dataset"])} / {_e(row["experiment"])}</td><td>{s["seed"]}</td><td class="l nw">{links}</td>'
                f'<td class="l nw">{hashes}</td><td class="l nw"><code>{_e(s["encoder_run_id"])}</code></td><td class="l"><code>{_e(s["code_version"])}</code></td></tr>'
            )
    h.append("</table></div>")
    h.append("<p>Evaluation protocols recorded in the metrics files:</p><ul>")
    for text, runs in protocols.items():
        h.append(f"<li>{_e(text)} <span class=src>({len(runs)} runs)</span></li>")
    h.append("</ul>")
    if settings:
        h.append(
            "<details><summary>Effective pretrain settings of each run (reports/params.resolved.json)</summary><pre>"
            + _e(json.dumps({k: settings[k] for k in sorted(settings)}, indent=1))
            + "</pre></details>"
        )
    return h
