"""The engine sees what the user sees: window/level for CT-like data, percentiles otherwise."""

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from qmedsam.intensity import to_uint8
from QMedSAMSlicerLib.intensity import choose_window, percentile_window


@pytest.fixture
def ct():
    return np.random.default_rng(1).integers(-1024, 2000, (4, 32, 32)).astype(np.int16)


@pytest.fixture
def mr():
    values = np.random.default_rng(2).gamma(2.0, 200.0, (4, 32, 32)).astype(np.float32)
    values[:, :4] = 0  # background outside the head
    return values


def test_ct_uses_the_display_window_even_with_auto_window_level(ct):
    window = choose_window(ct, window=400, level=40, auto_window_level=True)
    assert window.rule == "window/level" and (window.low, window.high) == (-160, 240)
    assert np.array_equal(window.apply(ct), to_uint8(ct, (40, 400)))  # same rule as `qmedsam segment`


def test_mr_uses_nonzero_percentiles_unless_the_user_set_a_window(mr):
    window = choose_window(mr, window=800, level=400, auto_window_level=True)
    assert window.rule == "percentiles"
    assert np.array_equal(window.apply(mr), to_uint8(mr))
    assert window.apply(mr)[:, :4].max() == 0  # zero voxels stay zero
    manual = choose_window(mr, window=800, level=400, auto_window_level=False)
    assert manual.rule == "window/level" and (manual.low, manual.high) == (0, 800)


def test_uint8_is_unchanged_and_degenerate_volumes_give_zeros():
    photo = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(choose_window(photo, 100, 50).apply(photo), photo)
    empty = np.zeros((2, 8, 8), np.float32)
    assert choose_window(empty, None, None).apply(empty).max() == 0
    constant = np.full((2, 8, 8), 7.0, np.float32)
    assert choose_window(constant, None, None).apply(constant).max() == 0


def test_large_volumes_are_sampled_without_changing_the_window():
    volume = np.random.default_rng(3).normal(500, 100, 5_000_000).astype(np.float32)
    exact = np.percentile(volume[volume != 0], [0.5, 99.5])
    window = percentile_window(volume)
    assert abs(window.low - exact[0]) < 2 and abs(window.high - exact[1]) < 2  # < 1 grey level of 255
