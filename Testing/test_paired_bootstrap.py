"""The paired bootstrap that says whether one model's agreement with FP32 beats another's beyond case noise."""

import numpy as np
import pytest

from training.paired_bootstrap import paired_difference, per_case_agreement


def test_a_constant_gain_on_every_case_has_a_point_interval():
    a = {f"case{i}": 0.5 + 0.1 for i in range(8)}
    b = {f"case{i}": 0.5 for i in range(8)}
    result = paired_difference(a, b)
    assert result.mean == pytest.approx(0.1) and result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)
    assert result.wins == 8 and result.cases == 8


def test_one_large_case_gain_is_not_called_significant():
    # One case much better and the rest slightly worse: the mean is positive but the interval must include 0.
    b = {f"case{i}": 0.8 for i in range(16)}
    a = dict(b, case0=1.0 + 0.8, **{f"case{i}": 0.79 for i in range(1, 16)})
    result = paired_difference(a, b)
    assert result.mean > 0 and result.low < 0 < result.high and result.wins == 1


def test_pairing_removes_what_the_cases_share():
    # Cases range from hard to easy, and A is better by 0.02 on each: unpaired means overlap, the pairing does not.
    rng = np.random.default_rng(1)
    base = {f"case{i}": float(v) for i, v in enumerate(rng.uniform(0.3, 0.95, 16))}
    better = {case: value + 0.02 + float(rng.normal(0, 0.005)) for case, value in base.items()}
    result = paired_difference(better, base)
    assert 0.0 < result.low < result.high < 0.04


def test_models_scored_on_different_cases_are_refused():
    with pytest.raises(ValueError, match="different cases"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_missing_masks_say_which_case_and_what_to_do(tmp_path):
    reference, other = tmp_path / "fp32", tmp_path / "model"
    reference.mkdir()
    other.mkdir()
    np.savez_compressed(reference / "case.npz", segs=np.ones((4, 4), dtype=np.uint8))
    with pytest.raises(SystemExit, match="no masks for case.npz"):
        per_case_agreement(reference, other)
    np.savez_compressed(other / "case.npz", segs=np.ones((4, 4), dtype=np.uint8))
    assert per_case_agreement(reference, other) == {"case.npz": 1.0}
