"""Background prefetch: the encoder runs asynchronously and both engine calls then hit the cache.

Each test takes conftest's `fresh_segmenter`: the session's compiled model with its own empty cache and zeroed
statistics, so that counting encoder runs is exact."""

import time

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from qmedsam.preprocess import to_model_input
from QMedSAMSlicerLib.background_encoder import BackgroundEncoder, cache_keys
from QMedSAMSlicerLib.prefetch_benchmark import SCENARIOS, measure, release_to_mask


@pytest.fixture(scope="module")
def ct_slice(shared_data):
    with np.load(shared_data / "imgs" / "3DBox_CT_pyradiomics-lung1.npz") as data:
        volume, box = data["imgs"], data["boxes"][0]
    return volume, box


def wait(encoder):
    deadline = time.monotonic() + 30
    while encoder.poll():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_prefetched_slice_costs_only_the_decoder_in_2d_and_3d(fresh_segmenter, ct_slice):
    segmenter = fresh_segmenter
    volume, box = ct_slice
    encoder = BackgroundEncoder(segmenter)
    image = np.ascontiguousarray(volume[1])
    assert encoder.request(image) and not encoder.request(image)  # a second request for it is a no-op
    wait(encoder)
    assert encoder.is_cached(image) and encoder.completed == 1
    runs = segmenter.stats.encoder_runs
    expected = segmenter.runtime.encode(to_model_input(image)[0])
    np.testing.assert_allclose(segmenter.cache.get(cache_keys(image)[0]), expected, rtol=1e-5, atol=1e-5)
    segmenter.segment_2d(image, [box[[0, 1, 3, 4]]])
    assert segmenter.stats.encoder_runs == runs  # segment_2d found the prefetched embedding
    segmenter.segment_3d(volume, [[box[0], box[1], 0, box[3], box[4], 2]])
    assert segmenter.stats.encoder_runs == runs + 2  # and segment_3d encoded only the two other slices


def test_finish_waits_for_the_slice_in_flight_and_a_new_slice_cancels_the_old(fresh_segmenter, ct_slice):
    volume, box = ct_slice
    encoder = BackgroundEncoder(fresh_segmenter)
    encoder.request(np.ascontiguousarray(volume[0]))
    encoder.request(np.ascontiguousarray(volume[2]))  # the mouse moved on
    assert encoder.cancelled == 1
    encoder.finish(np.ascontiguousarray(volume[2]))
    assert encoder.is_cached(np.ascontiguousarray(volume[2])) and not encoder.is_cached(volume[0])
    encoder.request(np.ascontiguousarray(volume[0]))
    encoder.cancel()
    assert not encoder.poll()


def test_release_during_a_prefetch_waits_for_it_instead_of_encoding_again(fresh_segmenter, ct_slice):
    """What makes release faster, counted instead of timed (the benchmark prints the times)."""
    volume, box = ct_slice
    image, box_2d = np.ascontiguousarray(volume[1]), box[[0, 1, 3, 4]][None]
    encoder = BackgroundEncoder(fresh_segmenter)
    release_to_mask(fresh_segmenter, encoder, image, box_2d)  # no prefetch: the release encodes
    assert (fresh_segmenter.stats.encoder_runs, encoder.started) == (1, 0)
    other = np.ascontiguousarray(volume[2])
    assert encoder.request(other)  # the mouse reaches the next slice; the user releases at once
    release_to_mask(fresh_segmenter, encoder, other, box_2d)
    assert (fresh_segmenter.stats.encoder_runs, encoder.completed, encoder.cancelled) == (1, 1, 0)
    assert fresh_segmenter.stats.cache_hits >= 1 and fresh_segmenter.stats.decoder_calls == 2


def test_benchmark_reports_every_scenario(fresh_segmenter, ct_slice):
    volume, box = ct_slice
    latencies = measure(fresh_segmenter, np.ascontiguousarray(volume[1]), box[[0, 1, 3, 4]], repeats=1, dwell_s=0.05)
    assert list(latencies) == list(SCENARIOS) and all(0 < ms < 60_000 for ms in latencies.values())
