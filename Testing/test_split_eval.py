"""The test-split evaluation (training/evaluation/split_eval.py): cases found by name, scored by `qmedsam evaluate`'s
code, agreement with FP32's masks, the reference's masks reused, and the pool/shared/modality means."""

import json
import shutil

import numpy as np
import pytest
from qmedsam.evaluate import score_case
from qmedsam.metrics import label_agreement

from training.evaluation.split_eval import locate_cases, main, markdown, model_key, summarize

POOL_CASE = "2DBox_US_hc18-000"  # copied into a stand-in pool folder, so the test does not need ../pool
SHARED_CASE = "2DBox_Endoscopy_kvasir-cju0roawvklr"


@pytest.fixture
def split_and_pool(shared_data, tmp_path):
    pool = tmp_path / "pool"
    for kind in ("imgs", "gts"):
        (pool / kind).mkdir(parents=True)
        shutil.copy(shared_data / kind / f"{POOL_CASE}.npz", pool / kind)
    split = tmp_path / "split.yaml"
    split.write_text(f"train: []\nvalidation: []\ntest:\n- {POOL_CASE}\n- {SHARED_CASE}\n")
    return split, pool


def test_cases_are_found_in_the_first_folder_that_has_them_and_a_missing_one_is_named(split_and_pool, shared_data):
    _, pool = split_and_pool
    found = locate_cases([POOL_CASE, SHARED_CASE], [pool, shared_data])
    assert found == {POOL_CASE: pool, SHARED_CASE: shared_data}
    with pytest.raises(SystemExit, match="1 case.*first: 2DBox_CT_nowhere-1.*build_pool"):
        locate_cases([POOL_CASE, "2DBox_CT_nowhere-1"], [pool, shared_data])


def test_means_per_subset_and_modality_and_the_table():
    rows = [{"case": "a", "modality": "CT", "source": "pool", "dsc": 0.8, "nsd": 0.5, "agreement": 0.9},
            {"case": "b", "modality": "CT", "source": "shared", "dsc": 0.6, "nsd": 0.3, "agreement": 0.7},
            {"case": "c", "modality": "US", "source": "pool", "dsc": 0.4, "nsd": 0.1, "agreement": 1.0}]
    summary = summarize(rows)
    assert summary["all"]["cases"] == 3 and summary["all"]["dsc"] == pytest.approx(0.6)
    assert summary["pool"]["dsc"] == pytest.approx(0.6) and summary["shared"]["dsc"] == pytest.approx(0.6)
    assert summary["pool"]["agreement"] == pytest.approx(0.95) and summary["shared"]["nsd"] == pytest.approx(0.3)
    assert summary["modality"]["CT"]["dsc"] == pytest.approx(0.7) and summary["modality"]["US"]["cases"] == 1
    table = markdown([{"model": "m", "build": "m-1", "cases": rows, "summary": summary}])
    assert "| CT (2) | US (1) | DSC all (3) | DSC pool (2) | DSC shared (1) |" in table
    assert "| `m` | 0.7000 | 0.4000 | 0.6000 | 0.6000 | 0.6000 | 0.3000 | 0.8667 (0.7000) |" in table


def test_two_models_on_a_split_with_the_reference_masks_reused(split_and_pool, shared_data, tmp_path):
    split, pool = split_and_pool
    segs, out = tmp_path / "segs", tmp_path / "scores.json"
    arguments = ["--split", str(split), "--data", str(pool), str(shared_data), "--segs", str(segs),
                 "--threads", "2", "--json", str(out)]
    main(["litemedsam-fp32", "litemedsam-int8-ptq", *arguments])
    document = json.loads(out.read_text())
    assert document["split"]["part"] == "test" and len(document["split"]["sha256"]) == 64
    assert document["machine"]["cpu"] and "openvino" in document["versions"]
    fp32, int8 = document["results"]
    assert [row["source"] for row in fp32["cases"]] == ["shared", "pool"]  # sorted by case name
    assert all(row["agreement"] == 1.0 for row in fp32["cases"])
    for row in int8["cases"]:  # the same numbers as qmedsam evaluate and compare_models give for these masks
        folder = pool if row["source"] == "pool" else shared_data
        masks = segs / int8["build"] / f"{row['case']}.npz"
        assert row["dsc"] == score_case(row["case"], masks, folder / "gts" / f"{row['case']}.npz").dsc
        reference = np.load(segs / fp32["build"] / f"{row['case']}.npz")["segs"]
        assert row["agreement"] == label_agreement(reference, np.load(masks)["segs"])
    assert 0.8 < int8["summary"]["all"]["agreement"] < 1.0

    before = {path: path.stat().st_mtime_ns for path in segs.rglob("*.npz")}  # reused, never written again
    main(["litemedsam-int8-ptq", *arguments])  # the FP32 result of the first run is kept in the JSON
    assert {path: path.stat().st_mtime_ns for path in segs.rglob("*.npz")} == before
    again = json.loads(out.read_text())
    assert [r["model"] for r in again["results"]] == ["litemedsam-fp32", "litemedsam-int8-ptq"]
    assert again["results"][1]["cases"] == int8["cases"]


def test_masks_are_kept_per_build_and_arithmetic():
    f32, bf16, int8 = (model_key(spec) for spec in ("litemedsam-fp32", "litemedsam-fp32@bf16", "litemedsam-int8-ptq"))
    assert f32.startswith("litemedsam-fp32-") and bf16 == f32 + "@bf16" and int8.startswith("litemedsam-int8-ptq-")
