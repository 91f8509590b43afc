"""Every catalogued model says which cases it saw, and none that is not marked experimental saw a test case.

`cases_seen` (training/catalogue_writer.py) lists a model's calibration, training and selection cases and the
split file they came from; the test list of training/configs/split.yaml is for the final evaluation only.
"""

import json

import pytest
from qmedsam.catalogue import DEFAULT_MODELS_DIR

from training.catalogue_writer import (
    cases_seen,
    cases_seen_of,
    check_cases_seen,
    record_model,
    seen_test_cases,
)
from training.datasets.cases import SPLIT_FILE_IN_REPO, evaluation_cases
from training.provenance import REPO_ROOT

CATALOGUE = json.loads((DEFAULT_MODELS_DIR / "models.json").read_text())["models"]
TEST_CASES = evaluation_cases(REPO_ROOT / SPLIT_FILE_IN_REPO, "test")


@pytest.mark.parametrize("entry", CATALOGUE, ids=[entry["name"] for entry in CATALOGUE])
def test_every_catalogued_model_records_what_it_saw(entry):
    check_cases_seen(entry)  # raises with the entry's name when the field is missing or malformed
    assert entry["cases_seen"]["split"] in (None, SPLIT_FILE_IN_REPO) or entry.get("experimental")


@pytest.mark.parametrize("entry", CATALOGUE, ids=[entry["name"] for entry in CATALOGUE])
def test_no_model_saw_a_test_case_unless_marked_experimental_with_the_reason(entry):
    leaked = seen_test_cases(entry, TEST_CASES)
    if leaked:
        reason = entry.get("experimental")
        assert isinstance(reason, str) and len(reason) > 20, (
            f"{entry['name']} saw {len(leaked)} test case(s) of {SPLIT_FILE_IN_REPO} (first: {leaked[0]}) and is "
            "not marked experimental with a reason")


def test_the_default_model_is_not_experimental():
    default = next(entry for entry in CATALOGUE if entry.get("default"))
    assert "experimental" not in default, f"the default {default['name']} is experimental: {default['experimental']}"
    assert not seen_test_cases(default, TEST_CASES)


def test_cases_seen_read_from_the_fields_exporters_write():
    qat = {"name": "q", "qat": {"train_cases": ["t2", "t1", "t1"], "val_cases": ["v1"],
                                "config": {"split": "training/configs/split.yaml"}}}
    assert cases_seen_of(qat) == {"split": SPLIT_FILE_IN_REPO, "calibration": [], "training": ["t1", "t2"],
                                  "selection": ["v1"]}
    ptq = {"name": "p", "calibration_data": {"cases": {"c1": {"items": 1}}, "split": {"file": SPLIT_FILE_IN_REPO,
                                                                                       "part": "train"}}}
    assert cases_seen_of(ptq) == cases_seen(SPLIT_FILE_IN_REPO, calibration=["c1"])
    assert cases_seen(REPO_ROOT.parent / "pool" / "split.yaml")["split"] == "../pool/split.yaml"  # never absolute


def test_a_model_that_saw_a_test_case_is_found():
    entry = {"name": "m", "cases_seen": cases_seen(None, calibration=["a", "b"], selection=["c"])}
    assert seen_test_cases(entry, ["c", "b", "z"]) == ["b", "c"]
    assert seen_test_cases(entry, ["z"]) == []
    with pytest.raises(ValueError, match="'m'.*selection"):
        check_cases_seen({"name": "m", "cases_seen": {"split": None, "calibration": [], "training": []}})


def test_record_model_writes_cases_seen(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin"):
        (folder / name).write_bytes(name.encode())
    record_model({"name": "m", "folder": "m", "qat": {"train_cases": ["t"], "val_cases": ["v"]}}, models_dir=tmp_path)
    written = json.loads((tmp_path / "models.json").read_text())["models"][0]
    assert written["cases_seen"] == cases_seen(None, training=["t"], selection=["v"])
