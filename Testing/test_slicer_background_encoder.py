"""Background prefetch: the encoder runs asynchronously and both engine calls then hit the cache."""

import time

import numpy as np
import pytest
import slicer_lib  # noqa: F401
from qmedsam.engine import EmbeddingCache, Segmenter
from qmedsam.preprocess import to_model_input
from QMedSAMSlicerLib.background_encoder import BackgroundEncoder, cache_keys
from QMedSAMSlicerLib.prefetch_benchmark import SCENARIOS, measure


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    return Segmenter(None, threads=2, compile_cache_dir=tmp_path_factory.mktemp("ov-cache"))


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


def test_prefetched_slice_costs_only_the_decoder_in_2d_and_3d(segmenter, ct_slice):
    volume, box = ct_slice
    segmenter.cache = EmbeddingCache(512)
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


def test_finish_waits_for_the_slice_in_flight_and_a_new_slice_cancels_the_old(segmenter, ct_slice):
    volume, box = ct_slice
    segmenter.cache = EmbeddingCache(512)
    encoder = BackgroundEncoder(segmenter)
    encoder.request(np.ascontiguousarray(volume[0]))
    encoder.request(np.ascontiguousarray(volume[2]))  # the mouse moved on
    assert encoder.cancelled == 1
    encoder.finish(np.ascontiguousarray(volume[2]))
    assert encoder.is_cached(np.ascontiguousarray(volume[2])) and not encoder.is_cached(volume[0])
    encoder.request(np.ascontiguousarray(volume[0]))
    encoder.cancel()
    assert not encoder.poll()


def test_prefetch_makes_release_faster(segmenter, ct_slice):
    volume, box = ct_slice
    latencies = measure(segmenter, np.ascontiguousarray(volume[1]), box[[0, 1, 3, 4]], repeats=1, dwell_s=0.3)
    assert latencies[SCENARIOS[2]] < latencies[SCENARIOS[0]] / 3
