"""Evaluation speed (issue 9, item 4): feature extraction images/s, lbfgs probe fit time, and
retrieval time of `finesyn.eval.retrieval.retrieval_metrics` against a NumPy brute-force
reference on N random features (default 50,000 x 2048 in full mode; issue 4).

Each retrieval run is its own process (`python -m benchmarks.evaluation retrieval-worker ...`), on
the same features generated from the same seed, so its time excludes data generation and imports
and its peak RSS is its own. The reference computes the same metrics (Rank-k, full-ranking mAP,
test_loo protocol, ties to the lower index) by chunked matmul + a stable argsort.
- At N: ours (`engine=sort`) on all N queries; the reference on the first `ref_queries` (N/20) of
  them against the full gallery, its time scaled by N / ref_queries to the full run (every chunk of
  queries does the same work, so the time is linear in the number of queries). The full
  reference alone would take ~6 minutes of the 15-minute budget.
- At `check_n` (8,041, Stanford Cars' test set): ours with both engines and the reference, all
  queries: metrics compared, times side by side (why `sort` is the default engine).

Features are a Gaussian mixture (class means + unit noise; mean separation chosen so the probe's
top-1 is in the range of real features: ~80% for 10 classes, ~60% for the CUB-sized 200), so the
probe converges as on real features rather than fitting noise to max_iter.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.common import ROOT, Context, default_setting, paper_setting, run_measured

# the reference's per-chunk buffers (queries x gallery), the same bound as retrieval_metrics
MAX_CHUNK_ELEMS = 1 << 25


def mixture(sizes: tuple[int, ...], dim: int, classes: int, seed: int, sep: float = 4.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, labels) sets of the given sizes around the same class means."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim), dtype=np.float32) * np.float32(sep / np.sqrt(2 * dim))
    out = []
    for n in sizes:
        y = rng.integers(0, classes, n)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x += means[y]
        out.append((x, y))
    return out


# ----------------------------------------------------------------------------- extraction
def extraction(setting, n: int, batch_size: int) -> dict:
    import torch

    from finesyn.eval.features import extract_features
    from finesyn.models.backbone import Backbone

    torch.manual_seed(0)
    backbone = Backbone(setting.cfg.backbone, setting.cfg.stem, setting.cfg.pool)
    images = np.random.default_rng(0).integers(0, 256, (n, setting.image_size, setting.image_size, 3), dtype=np.uint8)
    warm = np.arange(min(n, 8))
    extract_features(backbone, images, warm, setting.crop, batch_size, "cpu")  # oneDNN primitives, allocator
    t0 = time.perf_counter()
    feats = extract_features(backbone, images, np.arange(n), setting.crop, batch_size, "cpu")
    dt = time.perf_counter() - t0
    return {
        "setting": setting.name,
        "backbone": setting.cfg.backbone,
        "crop_size": setting.crop,
        "batch_size": batch_size,
        "images": n,
        "feature_dim": int(feats.shape[1]),
        "wall_s": round(dt, 4),
        "images_per_s": n / dt,
    }


# ----------------------------------------------------------------------------- probe
def probe(name: str, n_train: int, n_test: int, dim: int, classes: int, cfg, sep: float = 4.0) -> dict:
    from finesyn.eval.probe import lbfgs_probe

    (xtr, ytr), (xte, yte) = mixture((n_train, n_test), dim, classes, 1, sep)
    t0 = time.perf_counter()
    res = lbfgs_probe(
        xtr, ytr, xte, yte, num_classes=classes, l2_grid=cfg.l2_grid, val_fraction=cfg.val_fraction, seed=0, max_iter=cfg.max_iter
    )
    dt = time.perf_counter() - t0
    return {
        "name": name,
        "n_train": n_train,
        "n_test": n_test,
        "dim": dim,
        "classes": classes,
        "separation": sep,
        "l2_grid": list(cfg.l2_grid),
        "max_iter": cfg.max_iter,
        "fit_time_s": round(dt, 4),
        "top1": res["top1"],
        "chosen_l2": res["l2"],
    }


# ----------------------------------------------------------------------------- retrieval
def numpy_reference(x: np.ndarray, y: np.ndarray, ks=(1, 5), queries: int | None = None) -> dict:
    """test_loo Rank-k and full-ranking mAP by brute force: cosine similarities by matmul, a stable
    argsort of each row (ties: lower gallery index first), the query itself removed.
    ``queries``: only the first that many queries (each still ranks all N - 1 others)."""
    x = np.asarray(x, np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    chunk = max(1, min(1024, MAX_CHUNK_ELEMS // n))
    ranks = np.arange(1, n, dtype=np.float64)
    hits = np.zeros(len(ks))
    ap_sum, n_eval = 0.0, 0
    for s in range(0, n if queries is None else min(queries, n), chunk):
        sim = x[s : min(s + chunk, n if queries is None else queries)] @ x.T
        m = len(sim)
        sim[np.arange(m), np.arange(s, s + m)] = -np.inf  # the query itself ranks last, then is dropped
        order = np.argsort(-sim, axis=1, kind="stable")[:, :-1]
        del sim
        rel = y[order] == y[s : s + m, None]
        del order
        cum = np.cumsum(rel, axis=1)
        n_rel = cum[:, -1]
        ok = n_rel > 0
        ap_sum += ((rel * cum / ranks).sum(1)[ok] / n_rel[ok]).sum()
        first = rel.argmax(1) + 1
        hits += (first[ok, None] <= np.asarray(ks)[None, :]).sum(0)
        n_eval += int(ok.sum())
    out = {f"rank{k}": 100.0 * h / n_eval for k, h in zip(ks, hits)}
    out["mAP"] = 100.0 * ap_sum / n_eval
    return out


def _worker(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.evaluation retrieval-worker")
    ap.add_argument("--impl", choices=("sort", "faiss", "numpy"), required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--queries", type=int, default=None, help="numpy only: the first that many queries")
    ap.add_argument("--dim", type=int, required=True)
    ap.add_argument("--classes", type=int, required=True)
    a = ap.parse_args(argv)
    ((x, y),) = mixture((a.n,), a.dim, a.classes, 3)
    from finesyn.eval.retrieval import retrieval_metrics  # imported before the clock starts (torch, faiss)

    t0 = time.perf_counter()
    if a.impl == "numpy":
        metrics = numpy_reference(x, y, queries=a.queries)
    else:
        res = retrieval_metrics(x, y, ks=(1, 5), device="cpu", engine=a.impl)
        metrics = {k: res[k] for k in ("rank1", "rank5", "mAP")}
    print(json.dumps({"impl": a.impl, "search_s": time.perf_counter() - t0, "metrics": metrics}))


def _retrieval_run(ctx: Context, impl: str, n: int, dim: int, classes: int, queries: int | None = None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.evaluation",
        "retrieval-worker",
        "--impl",
        impl,
        "--n",
        str(n),
        "--dim",
        str(dim),
        "--classes",
        str(classes),
    ]
    if queries is not None:
        cmd += ["--queries", str(queries)]
    r = run_measured(cmd, cwd=ROOT)
    if r["returncode"] != 0:
        raise RuntimeError(f"retrieval worker {impl} failed ({r['returncode']}): {r['stderr'][-2000:]}")
    res = json.loads(r["stdout"].strip().splitlines()[-1])
    q = n if queries is None else min(queries, n)
    out = {
        "queries": q,
        "search_s": round(res["search_s"], 3),
        "process_wall_s": r["wall_s"],
        "peak_rss_mib": r["peak_rss_mib"],
        "metrics": res["metrics"],
    }
    if q < n:
        out["search_s_all_queries_estimated"] = round(res["search_s"] * n / q, 3)
    ctx.log(f"  retrieval {impl} {n} x {dim} ({q} queries): {res['search_s']:.2f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    return out


def _metric_diff(runs: dict) -> float:
    a = list(runs.values())
    return max(abs(x["metrics"][k] - a[0]["metrics"][k]) for x in a[1:] for k in a[0]["metrics"])


def retrieval(ctx: Context, n: int, dim: int, classes: int, ref_queries: int, check_n: int) -> dict:
    """Ours on all of N, the reference on its first `ref_queries` queries (time scaled to N); then
    all three implementations on all of `check_n` (module docstring)."""
    at_n = {"sort": _retrieval_run(ctx, "sort", n, dim, classes), "numpy": _retrieval_run(ctx, "numpy", n, dim, classes, ref_queries)}
    check = {impl: _retrieval_run(ctx, impl, check_n, dim, classes) for impl in ("sort", "faiss", "numpy")}
    ref_s = at_n["numpy"].get("search_s_all_queries_estimated", at_n["numpy"]["search_s"])
    return {
        "name": "finesyn.eval.retrieval.retrieval_metrics",
        "n": n,
        "dim": dim,
        "classes": classes,
        "protocol": "test_loo, full ranking",
        "implementations": at_n,
        "ratio_ours_over_numpy": at_n["sort"]["search_s"] / ref_s if ref_s else None,
        "agreement": {
            "n": check_n,
            "implementations": check,
            "max_metric_diff_pct": _metric_diff(check),
            "ratio_faiss_over_sort": check["faiss"]["search_s"] / check["sort"]["search_s"] if check["sort"]["search_s"] else None,
            "ratio_numpy_over_sort": check["numpy"]["search_s"] / check["sort"]["search_s"] if check["sort"]["search_s"] else None,
        },
    }


def run(ctx: Context) -> dict:
    from finesyn.config import load_params

    p = load_params(ROOT / "params.yaml")
    d, pp = default_setting(ctx.quick), paper_setting(ctx.quick)
    ex_bs = p.extract.batch_size
    if ctx.quick:
        extractions = [extraction(d, 32, 16), extraction(pp, 16, 8)]
        probe_cfg = p.probe.model_copy(update={"max_iter": 20, "l2_grid": (1e-4, 1e-2)})
        probes = [probe("default-like (tiny)", 200, 100, 64, 5, probe_cfg)]
        ret = retrieval(ctx, ctx.retrieval_n, 64, 20, ref_queries=ctx.retrieval_n // 4, check_n=min(ctx.retrieval_n, 1000))
    else:
        ds = p.datasets[p.grid.datasets[0]]
        n_default = ds.num_classes * (ds.train_per_class + ds.test_per_class) if ds.kind == "synthetic" else 3000
        extractions = [extraction(d, n_default, ex_bs), extraction(pp, 256, ex_bs)]
        probes = [
            probe(
                "default synthetic (2000 x 512, 10 classes)",
                ds.num_classes * ds.train_per_class,
                ds.num_classes * ds.test_per_class,
                512,
                ds.num_classes,
                p.probe,
            ),
            probe("CUB-200-sized (5994 x 2048, 200 classes)", 5994, 5794, 2048, 200, p.probe, sep=8.0),
        ]
        # the agreement run at Stanford Cars' test-set size (8,041), the largest LOO set of the three datasets
        ret = retrieval(ctx, ctx.retrieval_n, 2048, 200, ref_queries=max(1, ctx.retrieval_n // 20), check_n=min(ctx.retrieval_n, 8041))
    for e in extractions:
        ctx.log(f"  extraction {e['setting']}: {e['images_per_s']:.1f} img/s")
    for q in probes:
        ctx.log(f"  probe {q['name']}: {q['fit_time_s']:.2f} s")
    return {"extraction": extractions, "probe": probes, "retrieval": ret}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "retrieval-worker":
        _worker(sys.argv[2:])
    else:
        sys.exit("usage: python -m benchmarks.evaluation retrieval-worker --impl faiss|numpy --n N --dim D --classes C")
