"""results.json -> results.md: the summary tables."""

from __future__ import annotations


def _f(v, fmt: str = ".3f", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return format(v, fmt)
    return str(v)


def _table(head: list[str], rows: list[list]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(str(c) for c in r) + " |" for r in rows),
        "",
    ]


def _verdict(p) -> str:
    return "–" if p is None else ("PASS" if p else "FAIL")


def render(d: dict) -> str:
    m = d["machine"]
    s = d["sections"]
    lines = [f"# finesyn benchmarks ({d['mode']} mode)", ""]
    for n in d.get("notes", []):
        lines.append(f"> **Note:** {n}")
    if d.get("notes"):
        lines.append("")
    peak = (m.get("matmul_peak_start") or {}).get("peak_gflops")
    lines += [
        f"{d.get('started')} · git {m.get('git_revision')} · total {d.get('wall_s')} s",
        "",
        *_table(
            [
                "CPU",
                "cores (usable / logical / physical)",
                "torch threads",
                "torch",
                "numpy",
                "faiss",
                "matmul peak (start)",
                "load avg start → end",
            ],
            [
                [
                    m.get("cpu_model"),
                    f"{m.get('usable_cores')} / {m.get('logical_cores')} / {m.get('physical_cores')}",
                    m.get("torch_threads"),
                    m.get("torch"),
                    m.get("numpy"),
                    m.get("faiss"),
                    f"{_f(peak, '.1f')} GFLOP/s",
                    f"{(m.get('load_average_start') or ['?'])[0]} → {(m.get('load_average_end') or ['?'])[0]}",
                ]
            ],
        ),
        "## Targets",
        "",
        *_table(
            ["target", "measured", "threshold", "result"],
            [
                [t["description"], _f(t["measured"]), f"{t['comparison']} {t['threshold']}", _verdict(t["passed"])]
                for t in d.get("targets", [])
            ],
        ),
        "## Sections",
        "",
        *_table(
            ["section", "status", "wall s", "reason"],
            [[k, v["status"], v["wall_s"], (v.get("reason") or "").splitlines()[0] if v.get("reason") else ""] for k, v in s.items()],
        ),
    ]

    tp = s.get("throughput", {}).get("results", {})
    if tp.get("runs"):
        ratios = {(r["setting"], r["method"]): r["ratio"] for r in tp["module_ratios"]}
        rows = []
        for r in tp["runs"]:
            if r["synth"]:
                continue
            mod = next((x for x in tp["runs"] if x["setting"] == r["setting"] and x["method"] == r["method"] and x["synth"]), None)
            rows.append(
                [
                    r["setting"],
                    r["method"],
                    f"{r['backbone']} {r['crop_size']} px b{r['batch_size']}",
                    _f(r["step_s"]["median"]),
                    _f(r["images_per_s"], ".1f"),
                    _f(mod and mod["step_s"]["median"]),
                    _f(mod and mod["images_per_s"], ".1f"),
                    _f(ratios.get((r["setting"], r["method"])), ".2f"),
                    r["step_s"]["n"],
                ]
            )
        lines += [
            "## Pretraining throughput (`finesyn.train.pretrain`, median step)",
            "",
            *_table(
                [
                    "setting",
                    "method",
                    "model",
                    "baseline s/step",
                    "baseline img/s",
                    "module s/step",
                    "module img/s",
                    "module / baseline",
                    "steps",
                ],
                rows,
            ),
        ]

    pe = s.get("peer", {})
    if pe.get("results", {}).get("comparisons"):
        lines += [
            f"## MoCo v2 vs lightly {pe['results']['lightly_version']} (same pre-augmented views, alternating steps)",
            "",
            *_table(
                ["setting", "model", "queue", "ours s/step", "lightly s/step", "ours / lightly", "FLOPs equal"],
                [
                    [
                        c["setting"],
                        f"{c['backbone']} {c['crop_size']} px b{c['batch_size']}",
                        c["queue_size"],
                        _f(c["ours"]["step_s"]["median"]),
                        _f(c["peer"]["step_s"]["median"]),
                        _f(c["ratio_ours_over_peer"]),
                        _f(c["flops_match"]),
                    ]
                    for c in pe["results"]["comparisons"]
                ],
            ),
        ]
    elif pe:
        lines += ["## MoCo v2 vs lightly", "", f"{pe['status']}: {pe.get('reason')}", ""]

    ef = s.get("efficiency", {}).get("results", {})
    if ef.get("steps"):
        lines += [
            f"## FLOP/s vs matmul peak ({_f(ef['peak_gflops'], '.1f')} GFLOP/s)",
            "",
            *_table(
                ["setting", "method", "step", "GFLOP/step", "s/step", "GFLOP/s", "fraction of peak"],
                [
                    [
                        r["setting"],
                        r["method"] + (" + module" if r["synth"] else ""),
                        r["kind"],
                        _f(r["flops_per_step"] and r["flops_per_step"] / 1e9, ".1f"),
                        _f(r["step_s"]),
                        _f(r["achieved_gflops"], ".1f"),
                        _f(r["fraction_of_peak"], ".2f"),
                    ]
                    for r in ef["steps"]
                ],
            ),
        ]
        for p in ef.get("profiles", []):
            top = ", ".join(f"{o['op']} {o['self_cpu_pct']}%" for o in (p.get("top_ops") or [])[:5])
            lines.append(f"- `{p['file']}` ({p['setting']}, {p['method']}{' + module' if p['synth'] else ''}): {top}")
        lines.append("")

    ev = s.get("evaluation", {}).get("results", {})
    if ev:
        lines += [
            "## Evaluation",
            "",
            *_table(
                ["extraction", "model", "images", "img/s"],
                [
                    [e["setting"], f"{e['backbone']} {e['crop_size']} px b{e['batch_size']}", e["images"], _f(e["images_per_s"], ".1f")]
                    for e in ev.get("extraction", [])
                ],
            ),
        ]
        lines += _table(
            ["lbfgs probe", "train x dim", "classes", "fit s", "top-1"],
            [
                [q["name"], f"{q['n_train']} x {q['dim']}", q["classes"], _f(q["fit_time_s"], ".2f"), _f(q["top1"], ".1f")]
                for q in ev.get("probe", [])
            ],
        )
        r = ev.get("retrieval")
        if r:
            ag = r["agreement"]
            names = {"sort": "ours (engine sort)", "faiss": "ours (engine faiss)", "numpy": "NumPy reference"}

            def row(k, v, n):
                est = v.get("search_s_all_queries_estimated")
                time = _f(v["search_s"], ".2f") + (f" (all {n}: {_f(est, '.1f')}, scaled)" if est is not None else "")
                return [
                    names[k],
                    f"{n} x {r['dim']}",
                    f"{v['queries']}",
                    time,
                    _f(v["peak_rss_mib"], ".0f"),
                    _f(v["metrics"]["rank1"], ".2f"),
                    _f(v["metrics"]["mAP"], ".2f"),
                ]

            lines += _table(
                ["retrieval (test_loo, full ranking)", "features", "queries", "search s", "peak RSS MiB", "rank-1", "mAP"],
                [row(k, v, r["n"]) for k, v in r["implementations"].items()]
                + [row(k, v, ag["n"]) for k, v in ag["implementations"].items()],
            )
            lines += [
                f"At {r['n']}: ours / NumPy time {_f(r['ratio_ours_over_numpy'], '.2f')} (reference time scaled from its first "
                f"{r['implementations']['numpy']['queries']} queries). At {ag['n']}: faiss engine / sort engine {_f(ag['ratio_faiss_over_sort'], '.2f')}, "
                f"NumPy / sort engine {_f(ag['ratio_numpy_over_sort'], '.2f')}; largest metric difference {_f(ag['max_metric_diff_pct'], '.2g')} points",
                "",
            ]

    sm = s.get("stage_memory", {}).get("results", {})
    if sm.get("stages"):
        ds = sm["dataset"]
        lines += [
            f"## Stage peak RSS (subprocesses; {ds['train']}+{ds['test']} images of {ds['image_size']} px, {sm['experiment']}, "
            f"{sm['pretrain']['backbone']} batch {sm['pretrain']['batch_size']})",
            "",
            *_table(
                ["stage", "status", "wall s", "peak RSS MiB"],
                [[x["stage"], x["status"], _f(x.get("wall_s"), ".1f"), _f(x.get("peak_rss_mib"), ".0f")] for x in sm["stages"]],
            ),
        ]

    e2 = s.get("e2e", {})
    if e2:
        r = e2.get("results", {})
        if r.get("dvc_repro"):
            lines += [
                "## End to end",
                "",
                f"`dvc repro` (default params.yaml, fresh copy): {_f(r['dvc_repro']['wall_s'], '.1f')} s "
                f"(peak RSS {_f(r['dvc_repro'].get('peak_rss_mib'), '.0f')} MiB); no-op rerun {_f((r.get('dvc_repro_noop') or {}).get('wall_s'), '.1f')} s",
                "",
            ]
        else:
            lines += ["## End to end", "", f"{e2.get('status')}: {e2.get('reason')}", ""]
    return "\n".join(lines) + "\n"
