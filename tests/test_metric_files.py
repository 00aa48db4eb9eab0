"""finesyn.metric_files: a stage's record split into the numbers DVC compares and the meta record."""

import pytest

from finesyn.metric_files import PROBE_KEYS, retrieval_keys, split_record


def test_only_the_headline_numbers_go_to_the_metrics_file():
    record = {
        "rank1": 10.5, "rank5": 42.5, "mAP": 10.7, "n_queries": 1000, "protocol": {"retrieval": "test_loo"},
        "knn": {"top1_k20": 12.8, "top1_k200": 12.4, "k_effective": {"20": 20}, "temperature": 0.07},
        "search_time_s": 0.075, "libraries": {"torch": "2.9"},
    }  # fmt: skip
    metrics, meta = split_record(record, retrieval_keys([1, 5], [20, 200], map_at_r=False), "retrieve")
    assert metrics == {"rank1": 10.5, "rank5": 42.5, "mAP": 10.7, "knn": {"top1_k20": 12.8, "top1_k200": 12.4}}
    assert meta == {
        "n_queries": 1000, "protocol": {"retrieval": "test_loo"}, "knn": {"k_effective": {"20": 20}, "temperature": 0.07},
        "search_time_s": 0.075, "libraries": {"torch": "2.9"},
    }  # fmt: skip
    assert record["knn"]["top1_k20"] == 12.8  # the caller's record is left whole


def test_map_at_r_is_a_metric_when_computed():
    assert ("mAP@R",) in retrieval_keys([1], [20], map_at_r=True) and ("mAP@R",) not in retrieval_keys([1], [20], map_at_r=False)


@pytest.mark.parametrize("value", [None, "17.5", float("nan"), True])
def test_a_missing_or_non_numeric_metric_is_an_error_naming_it(value):
    record = {"top1": 17.5, "per_class_top1": [1.0]}
    if value is not None:
        record["top5"] = value
    with pytest.raises(ValueError, match=r"probe \(lbfgs\): top5 is"):
        split_record(record, PROBE_KEYS, "probe (lbfgs)")


def test_metrics_carry_no_float_noise():
    """0.2081 * 100 (a mean of hits times 100) is 20.810000000000002 in binary floating point: the file holds 20.81."""
    assert repr(0.2081 * 100) == "20.810000000000002"
    metrics, _ = split_record({"top1": 0.2081 * 100, "top5": 0.6866 * 100}, PROBE_KEYS, "probe")
    assert metrics == {"top1": 20.81, "top5": 68.66} and repr(metrics["top1"]) == "20.81"
    mAP, _ = split_record({"top1": 10.152175267757555, "top5": 1.0}, PROBE_KEYS, "probe")
    assert mAP["top1"] == 10.152175  # six decimals: below any resolution of the protocol
