"""Retrieval metrics (Rank-k hit rates, full-ranking mAP) in bounded memory.

Protocol (paper notes, "Evaluation protocols"): cosine similarity of L2-normalised features,
exact inner-product search. ``test_loo``: every test item queries all *other* test items;
``train_gallery``: test queries against a separate gallery.

mAP needs the rank of every relevant item in every query's *full* ranking. Two engines give the
same ranks (ties: lower index first): ``sort`` (default): a BLAS product per chunk of queries (on
the GPU when there is one), then ranks by sorting similarity *values* (`relevant_ranks`);
``faiss``: FAISS exact search with k = gallery size. FAISS's k-selection is a heap, built for
k << N: for k = N it is the slow one (benchmarks/results.md), so FAISS does the kNN
vote (small k, `finesyn.eval.knn`) and the sort engine the full ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import torch

# FAISS GPU k-selection cannot return more than this many neighbours per query.
GPU_MAX_K = 2048
# Upper bound on (queries per chunk) x (gallery size): the per-chunk buffers (scores, ids and
# FAISS's internal result reservoir, ~40 B per element) stay around 1.3 GB whatever N is.
MAX_CHUNK_ELEMS = 1 << 25

MAP_DEFINITION = (
    "AP = (1/R) * sum_k k / r_k over the 1-based ranks r_k of the R relevant gallery items "
    "in the full ranking; mAP@R = (1/R) * sum of precision@i at relevant positions i <= R; "
    "averaged over queries with R > 0; percent"
)
TIE_BREAK = "equal similarity: lower gallery index ranks first"
DEVICES = ("auto", "cpu", "gpu")
ENGINES = ("sort", "faiss")


def faiss_index(dim: int, device: str = "auto") -> faiss.Index:
    """Exact inner-product index; GPU when asked/available so callers need not care.

    ``device``: "auto" (GPU iff FAISS sees one and was built with GPU support), "cpu", "gpu".
    """
    check_device(device)
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "gpu" and not has_gpu:
        raise RuntimeError("device='gpu' but this FAISS build sees no GPU")
    if device == "cpu" or not has_gpu:
        return faiss.IndexFlatIP(dim)
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(res, dim)
    # keep the resources alive as long as the index (a Python attribute on the SWIG proxy, which
    # faiss's stubs do not declare)
    index.referenced_objects = [res]  # type: ignore[attr-defined]
    return index


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")


def is_gpu_index(index: faiss.Index) -> bool:
    return type(index).__name__.startswith("Gpu")


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalised float32 C-contiguous copy (the caller's array is never modified)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n, dim), got shape {x.shape}")
    if not np.isfinite(x).all():  # FAISS would silently return id -1 for NaN scores
        raise ValueError("features contain NaN or inf")
    faiss.normalize_L2(x)
    return x


def search(index: faiss.Index, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` with a deterministic tie order: equal scores by ascending id.

    FAISS (CPU flat index, 1.15) keeps the lowest ids at the top-k boundary but lists tied ids
    in *descending* order, so rows containing ties are re-sorted (score desc, id asc).
    """
    d, i = index.search(x, k)
    tied = np.flatnonzero((d[:, 1:] == d[:, :-1]).any(axis=1))
    if tied.size:  # common: float32 scores collide by chance in large galleries
        dt = d[tied]
        # d is sorted, so (tie-group number, id) as one int64 key sorts ids within groups
        group = np.zeros(dt.shape, np.int64)
        np.cumsum(dt[:, 1:] != dt[:, :-1], axis=1, out=group[:, 1:])
        del dt
        group *= index.ntotal  # in place: this runs on chunk x N arrays
        group += i[tied]
        group.sort(axis=1)
        group %= index.ntotal
        i[tied] = group
    return d, i


def torch_device(device: str = "auto") -> torch.device:
    """The sort engine's device: CUDA when asked/available, like `faiss_index`."""
    check_device(device)
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("device='gpu' but torch sees no CUDA device")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def similarities(queries: torch.Tensor, gallery: torch.Tensor, self_ids: torch.Tensor | None) -> np.ndarray:
    """Cosine similarities of a chunk of queries (BLAS / cuBLAS) as a float32 NumPy array.

    ``self_ids``: each query's own gallery index (LOO), set to -inf so it ranks after everything.
    """
    sim = queries @ gallery.T
    if self_ids is not None:
        sim[torch.arange(len(sim), device=sim.device), self_ids] = -torch.inf  # scores are finite
    return sim.cpu().numpy()


def relevant_ranks(sim: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, 1-based rank) of every relevant item, ranks ascending within each row.

    The ranking is similarity descending, equal similarity by lower index. It is never
    materialised: a relevant item's rank is its position among the row's relevant items (sorted
    by that rule) plus the number of other items ranked above it, counted by binary search in the
    row's sorted other similarities. A value sort is ~3x faster than the stable argsort a full
    ranking needs (50,000-wide rows, NumPy's SIMD sort vs torch.argsort).
    """
    r, c = np.nonzero(rel)
    v = sim[r, c]
    order = np.lexsort((c, -v, r))  # by row, then similarity descending, then index ascending
    r, c, v = r[order], c[order], v[order]
    n_rel = np.bincount(r, minlength=len(sim))
    start = np.cumsum(n_rel) - n_rel
    rank = np.arange(1, len(r) + 1) - start[r]  # position among the row's relevant items
    others = np.where(rel, -np.inf, sim)  # relevant items (and a LOO query's -inf self) never count
    others.sort(axis=1)
    n = sim.shape[1]
    for i in np.flatnonzero(n_rel):
        sl = slice(start[i], start[i] + n_rel[i])
        lo = np.searchsorted(others[i], v[sl], "left")
        hi = np.searchsorted(others[i], v[sl], "right")
        rank[sl] += n - hi  # strictly more similar
        for j in np.flatnonzero(hi > lo):  # equal similarity: only lower indices rank above (rare)
            k = start[i] + j
            rank[k] += np.count_nonzero((sim[i, : c[k]] == v[k]) & ~rel[i, : c[k]])
    return r, rank


def _codes(query_labels, gallery_labels) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for labels of any dtype, shared by queries and gallery."""
    _, inv = np.unique(np.concatenate([np.asarray(query_labels), np.asarray(gallery_labels)]), return_inverse=True)
    inv = inv.astype(np.int32)
    return inv[: len(query_labels)], inv[len(query_labels) :]


def retrieval_metrics(
    query_feats: np.ndarray,
    query_labels: np.ndarray,
    gallery_feats: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    *,
    ks: Sequence[int] = (1, 5),
    map_at_r: bool = False,
    chunk_size: int = 1024,
    device: str = "auto",
    engine: str = "sort",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Rank-k hit rates and full-ranking mAP (percent) of cosine retrieval.

    ``gallery_feats=None`` -> ``test_loo``: each query ranks all other queries (itself removed
    by index, so duplicates of it still count). Queries without any relevant gallery item
    (e.g. single-member classes under LOO) are excluded from every metric and counted in
    ``n_queries_without_relevant``. Ties: lower gallery index first. Queries are processed in
    chunks of at most ``chunk_size`` (further capped so chunk x gallery <= MAX_CHUNK_ELEMS):
    memory is O(chunk x N), never N x N. ``n_gallery`` is the number of items each query
    ranks (N - 1 under LOO). ``engine`` (module docstring): "sort" or "faiss"; ``device``: the
    engine's device ("auto": GPU when there is one). A full ranking needs k = gallery size,
    beyond FAISS-GPU's k-selection limit, so the faiss engine searches galleries larger than
    GPU_MAX_K on CPU (``device`` in the output says where the ranking ran). ``progress(done, n_queries)``
    is called before the first chunk of queries and after each (a large gallery takes minutes).
    """
    loo = gallery_feats is None
    q, g, qy, gy, ks = _checked_inputs(query_feats, query_labels, gallery_feats, gallery_labels, ks, chunk_size, device, engine)
    n_q, n_g = len(q), len(g)
    n_rank = n_g - 1 if loo else n_g  # items ranked per query
    ranking, ran_on = _ranker(engine, device, q, g, qy, gy, loo)
    step = max(1, min(chunk_size, MAX_CHUNK_ELEMS // n_g))
    hits, ap_sum, apr_sum, n_eval = _sum_over_chunks(ranking, n_q, step, ks, map_at_r, progress)
    pct = (lambda v: 100.0 * v / n_eval) if n_eval else (lambda v: float("nan"))
    out: dict[str, Any] = {"protocol": "test_loo" if loo else "train_gallery"}
    out.update({f"rank{k}": float(pct(h)) for k, h in zip(ks, hits)})
    out["mAP"] = float(pct(ap_sum))
    if map_at_r:
        out["mAP@R"] = float(pct(apr_sum))
    out.update(
        n_queries=n_q,
        n_gallery=n_rank,
        n_queries_without_relevant=n_q - n_eval,
        similarity="cosine",
        map_definition=MAP_DEFINITION,
        tie_break=TIE_BREAK,
        engine=engine,
        device=ran_on,
    )
    return out


def _checked_inputs(query_feats, query_labels, gallery_feats, gallery_labels, ks, chunk_size, device, engine):
    """(normalised queries, gallery, their label codes, sorted ks), or a ValueError saying what is wrong."""
    loo = gallery_feats is None
    if loo != (gallery_labels is None):
        raise ValueError("gallery_feats and gallery_labels must be given together")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    check_device(device)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    q = normalize(query_feats)
    g = q if loo else normalize(gallery_feats)
    if loo:
        gallery_labels = query_labels
    if len(query_labels) != len(q) or len(gallery_labels) != len(g):
        raise ValueError("features and labels differ in length")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    if (len(g) - 1 if loo else len(g)) < 1:
        raise ValueError("retrieval needs at least one gallery item per query")
    qy, gy = _codes(query_labels, gallery_labels)
    return q, g, qy, gy, ks


def _ranker(engine: str, device: str, q, g, qy, gy, loo: bool):
    """(ranking(s, m) -> (row, 1-based rank) of every relevant item of queries s..s+m, where it ran)."""
    n_g = len(g)
    n_rank = n_g - 1 if loo else n_g
    if engine == "faiss":
        index = faiss_index(q.shape[1], device if n_g <= GPU_MAX_K else "cpu")
        index.add(g)

        def faiss_ranking(s: int, m: int) -> tuple[np.ndarray, np.ndarray]:
            _, ids = search(index, q[s : s + m], n_g)
            if loo:  # drop the query itself, wherever it ranks
                ids = ids[ids != np.arange(s, s + m)[:, None]].reshape(m, n_rank)
            r, c = np.nonzero(gy[ids] == qy[s : s + m, None])  # row-major: ranks ascending per row
            return r, c + 1

        return faiss_ranking, "gpu" if is_gpu_index(index) else "cpu"
    dev = torch_device(device)
    q_t = torch.from_numpy(q).to(dev)
    g_t = q_t if loo else torch.from_numpy(g).to(dev)

    def ranking(s: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        self_ids = np.arange(s, s + m)
        sim = similarities(q_t[s : s + m], g_t, torch.from_numpy(self_ids).to(dev) if loo else None)
        rel = gy[None, :] == qy[s : s + m, None]
        if loo:
            rel[np.arange(m), self_ids] = False
        return relevant_ranks(sim, rel)

    return ranking, "gpu" if dev.type == "cuda" else "cpu"


def _sum_over_chunks(
    ranking, n_q: int, step: int, ks: Sequence[int], map_at_r: bool, progress=None
) -> tuple[np.ndarray, float, float, int]:
    """Rank-k hits, AP sum, AP@R sum and the number of queries with a relevant item, chunk by chunk."""
    hits = np.zeros(len(ks))
    ap_sum = apr_sum = 0.0
    n_eval = 0
    if progress:
        progress(0, n_q)
    for s in range(0, n_q, step):
        m = min(step, n_q - s)
        r, rank = ranking(s, m)  # rows ascending, relevant ranks ascending within each row
        n_rel = np.bincount(r, minlength=m)
        start = np.cumsum(n_rel) - n_rel
        rank = rank.astype(np.float64)
        prec = (np.arange(len(r)) - start[r] + 1) / rank  # k / r_k
        ok = n_rel > 0
        first = rank[start[ok]]
        hits += (first[:, None] <= np.asarray(ks)[None, :]).sum(0)
        ap_sum += (np.bincount(r, prec, minlength=m)[ok] / n_rel[ok]).sum()
        if map_at_r:
            within = np.where(rank <= n_rel[r], prec, 0.0)
            apr_sum += (np.bincount(r, within, minlength=m)[ok] / n_rel[ok]).sum()
        n_eval += int(ok.sum())
        if progress:
            progress(s + m, n_q)
    return hits, ap_sum, apr_sum, n_eval
