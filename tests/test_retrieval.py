import numpy as np
import pytest

from finesyn.eval import retrieval
from finesyn.eval.retrieval import retrieval_metrics


def reference(q, qy, g=None, gy=None, ks=(1, 5)):
    """Brute force: full sort of every query's similarities, ties by lower gallery index."""
    loo = g is None
    g, gy = (q, qy) if loo else (g, gy)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    hits, aps, apr, skipped = np.zeros(len(ks)), [], [], 0
    for i in range(len(q)):
        s = (gn @ qn[i]).astype(np.float32)
        order = np.lexsort((np.arange(len(g)), -s))
        if loo:
            order = order[order != i]
        rel = np.asarray(gy)[order] == qy[i]
        R = rel.sum()
        if R == 0:
            skipped += 1
            continue
        ranks = np.flatnonzero(rel) + 1
        aps.append(np.mean(np.arange(1, R + 1) / ranks))
        apr.append(sum(rel[:j].sum() / j for j in range(1, R + 1) if rel[j - 1]) / R)
        hits += [rel[:k].any() for k in ks]
    out = {f"rank{k}": 100 * h / len(aps) for k, h in zip(ks, hits)}
    out.update({"mAP": 100 * np.mean(aps), "mAP@R": 100 * np.mean(apr)})
    return out, skipped


def check(out, ref, skipped):
    for key, v in ref.items():
        assert out[key] == pytest.approx(v, abs=1e-9), key
    assert out["n_queries_without_relevant"] == skipped


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d = 150, 16
    y = rng.integers(0, 8, n)
    y[7] = 99  # single-member class: excluded under LOO
    x = rng.standard_normal((n, d)).astype(np.float32) + 0.7 * np.eye(d, dtype=np.float32)[y % d]
    return x, y, rng


ENGINES = ["sort", "faiss"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("chunk", [1, 13, 149, 4096])
def test_loo_matches_reference(data, chunk, engine):
    x, y, _ = data
    out = retrieval_metrics(x, y, ks=(1, 5, 10), map_at_r=True, chunk_size=chunk, device="cpu", engine=engine)
    ref, skipped = reference(x, y, ks=(1, 5, 10))
    check(out, ref, skipped)
    assert skipped == 1
    assert out["protocol"] == "test_loo" and out["n_queries"] == 150 and out["n_gallery"] == 149
    assert out["engine"] == engine and out["device"] == "cpu"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_train_gallery_matches_reference(data, chunk, engine):
    x, y, _ = data
    rng = np.random.default_rng(5)
    g = rng.standard_normal((90, x.shape[1])).astype(np.float32)
    gy = rng.integers(0, 8, 90)  # class 99 absent from the gallery
    out = retrieval_metrics(x, y, g, gy, map_at_r=True, chunk_size=chunk, engine=engine)
    ref, skipped = reference(x, y, g, gy)
    check(out, ref, skipped)
    assert out["protocol"] == "train_gallery" and out["n_gallery"] == 90 and skipped == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_hand_computed_ap(engine):
    q = np.array([[1, 0]], np.float32)
    # similarities 1, .8, .6, 0: relevant (label 0) at ranks 1 and 3
    g = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], np.float32)
    out = retrieval_metrics(q, [0], g, [0, 1, 0, 1], ks=(1, 2), map_at_r=True, engine=engine)
    assert out["mAP"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)
    assert out["mAP@R"] == pytest.approx(100 * (1 / 1) / 2)  # R = 2: only rank 1 is within R
    assert out["rank1"] == 100 and out["rank2"] == 100
    # Not normalised: features of any scale give the same cosine ranking
    out2 = retrieval_metrics(5 * q, [0], 3 * g, [0, 1, 0, 1], ks=(1, 2), map_at_r=True, engine=engine)
    assert out2["mAP"] == out["mAP"]


@pytest.mark.parametrize("engine", ENGINES)
def test_ties_lower_gallery_index_first(engine):
    q = np.array([[1, 0]], np.float32)
    g = np.array([[1, 0], [1, 0], [0, 1]], np.float32)  # items 0 and 1 tie
    a = retrieval_metrics(q, ["a"], g, ["a", "b", "a"], engine=engine)  # relevant at ranks 1, 3
    assert a["rank1"] == 100 and a["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    b = retrieval_metrics(q, ["a"], g, ["b", "a", "a"], engine=engine)  # relevant at ranks 2, 3
    assert b["rank1"] == 0 and b["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    # many tied rows, across chunk sizes, against the reference
    rng = np.random.default_rng(1)
    x = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 60)]
    y = rng.integers(0, 4, 60)
    ref, skipped = reference(x, y)
    for chunk in (1, 25, 100):
        check(retrieval_metrics(x, y, chunk_size=chunk, map_at_r=True, engine=engine), ref, skipped)


@pytest.mark.parametrize("engine", ENGINES)
def test_loo_self_excluded_and_singletons_counted(engine):
    # item 0 and 1 are identical; 2 is a singleton class; 3 has the same label as 0/1
    x = np.array([[1, 0], [1, 0], [0.9, 0.1], [0, 1]], np.float32)
    y = np.array([0, 0, 1, 0])
    out = retrieval_metrics(x, y, ks=(1,), engine=engine)
    assert out["n_queries_without_relevant"] == 1
    # q0 ranks [1(0), 2(1), 3(0)] -> AP (1 + 2/3)/2; q1 ranks [0(0), 2(1), 3(0)] -> same;
    # q3 ranks [2(1), 0(0), 1(0)] (0 and 1 tie at 0) -> AP (1/2 + 2/3)/2, rank-1 miss
    assert out["rank1"] == pytest.approx(100 * 2 / 3)
    assert out["mAP"] == pytest.approx(100 * ((1 + 2 / 3) + (1 / 2 + 2 / 3) / 2) / 3)


def test_no_relevant_at_all_gives_nan_not_crash():
    out = retrieval_metrics(np.eye(3, dtype=np.float32), [0, 1, 2])
    assert out["n_queries_without_relevant"] == 3 and np.isnan(out["mAP"])


@pytest.mark.parametrize("engine", ENGINES)
def test_inputs_untouched_and_chunked_search(monkeypatch, engine):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    before = x.copy()
    y = rng.integers(0, 5, 300)
    calls = []  # (queries, gallery items scored) per chunk
    if engine == "faiss":
        real = retrieval.search

        def spy(index, q, k):
            calls.append((len(q), k))
            return real(index, q, k)

        monkeypatch.setattr(retrieval, "search", spy)
    else:
        real = retrieval.similarities

        def spy(q, g, self_ids):
            calls.append((len(q), len(g)))
            return real(q, g, self_ids)

        monkeypatch.setattr(retrieval, "similarities", spy)
    retrieval_metrics(x, y, chunk_size=64, engine=engine)
    np.testing.assert_array_equal(x, before)
    assert max(n for n, _ in calls) == 64 and sum(n for n, _ in calls) == 300
    # the element cap shrinks chunks for big galleries: memory is O(chunk x N), never N x N
    calls.clear()
    monkeypatch.setattr(retrieval, "MAX_CHUNK_ELEMS", 300 * 50)
    retrieval_metrics(x, y, chunk_size=1024, engine=engine)
    assert max(n * k for n, k in calls) <= 300 * 50


def test_faiss_index_device_selection():
    import faiss

    assert isinstance(retrieval.faiss_index(4, "cpu"), faiss.IndexFlatIP)
    idx = retrieval.faiss_index(4, "auto")
    assert idx.metric_type == faiss.METRIC_INNER_PRODUCT and idx.d == 4
    if faiss.get_num_gpus() == 0:
        assert not retrieval.is_gpu_index(idx)
    with pytest.raises(ValueError):
        retrieval.faiss_index(4, "tpu")


def test_bad_inputs():
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError):
        retrieval_metrics(x, [0, 1])
    with pytest.raises(ValueError):
        retrieval_metrics(x, [0, 1, 1], x)
    with pytest.raises(ValueError):
        retrieval_metrics(x, [0, 1, 1], ks=(0,))
    with pytest.raises(ValueError):  # NaN would make FAISS return id -1
        retrieval_metrics(np.full((3, 2), np.nan, np.float32), [0, 1, 1])
    with pytest.raises(ValueError, match="engine"):
        retrieval_metrics(x, [0, 1, 1], engine="annoy")


def test_engines_rank_identically_on_many_ties():
    """Float32 scores collide in big galleries: both engines must break ties the same way."""
    rng = np.random.default_rng(3)
    # ±e_i: 8 directions whose cosines are exactly -1, 0 or 1 in any summation order (BLAS, FAISS, AVX-512 or
    # not), so the ties are ties on every CPU; directions such as (1, 2, 0, -1) tie only up to rounding
    x = np.zeros((400, 4), np.float32)
    x[np.arange(400), rng.integers(0, 4, 400)] = rng.choice([-1.0, 1.0], 400)
    x[rng.integers(0, 400, 20)] = 0  # zero vectors: similarity 0 to everything
    y = rng.integers(0, 6, 400)
    a = retrieval_metrics(x, y, ks=(1, 5), map_at_r=True, chunk_size=37, engine="sort")
    b = retrieval_metrics(x, y, ks=(1, 5), map_at_r=True, chunk_size=37, engine="faiss")
    for key in ("rank1", "rank5", "mAP", "mAP@R"):
        assert a[key] == b[key], key


def test_sort_engine_device_selection():
    import torch

    assert retrieval.torch_device("cpu").type == "cpu"
    assert retrieval.torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            retrieval_metrics(np.eye(3, dtype=np.float32), [0, 0, 1], device="gpu")
