"""Calibration cases from a split file: the shared --split/--part options and the seeded per-modality draw."""

import argparse

import pytest
import yaml

from training.datasets.calibration_set import calibration_items, draw_cases
from training.datasets.cases import SPLIT_FILE_IN_REPO, add_split_arguments, cases_from_split, split_record
from training.provenance import REPO_ROOT
from training.quantization.ptq import calibration_cases, ptq_entry
from training.quantization.quantize import QuantRecipe


def _parser(evaluation=False, default_part=None):
    parser = argparse.ArgumentParser()
    add_split_arguments(parser, default_part, evaluation=evaluation)
    return parser


@pytest.fixture
def split_file(tmp_path, shared_data):
    """shared/data's 16 cases spread over the three lists: ten 2D ones train, the 3D ones validation, the rest test."""
    names = sorted(p.stem for p in (shared_data / "imgs").glob("*.npz"))
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump({"train": [n for n in names if n.startswith("2D")][:10],
                                    "validation": [n for n in names if n.startswith("3D")],
                                    "test": [n for n in names if n.startswith("2D")][10:]}))
    return path


def test_training_commands_cannot_ask_for_the_test_list(split_file, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--split", str(split_file), "--part", "test"])
    assert "invalid choice: 'test'" in capsys.readouterr().err
    args = _parser().parse_args(["--split", str(split_file)])
    assert args.part == "train" and cases_from_split(args) == set(yaml.safe_load(split_file.read_text())["train"])


def test_evaluation_commands_may_read_any_list_and_no_split_means_every_case(split_file):
    args = _parser(evaluation=True, default_part="validation").parse_args(["--split", str(split_file),
                                                                           "--part", "test"])
    assert cases_from_split(args) == set(yaml.safe_load(split_file.read_text())["test"])
    assert split_record(args) == {"file": "split.yaml", "part": "test"}  # outside the repo: the name only
    plain = _parser(evaluation=True).parse_args([])
    assert cases_from_split(plain) is None and split_record(plain) is None
    shipped = _parser().parse_args(["--split", str(REPO_ROOT / SPLIT_FILE_IN_REPO)])
    assert split_record(shipped) == {"file": SPLIT_FILE_IN_REPO, "part": "train"}


def test_draw_is_seeded_per_modality_and_stays_inside_the_allowed_cases(shared_data):
    allowed = {p.stem for p in (shared_data / "imgs").glob("2D*.npz")}
    first = draw_cases(shared_data, allowed, 1, seed=0)
    assert first == draw_cases(shared_data, allowed, 1, seed=0)
    assert set(first) <= allowed
    modalities = [n.split("_")[1] for n in first]
    assert len(modalities) == len(set(modalities)) == len({n.split("_")[1] for n in allowed})
    # Another seed draws other cases where a modality has a choice (CT has two 2D cases here).
    assert any(draw_cases(shared_data, allowed, 1, seed=s) != first for s in range(1, 6))
    # A modality's draw does not depend on the other modalities in the folder.
    ct_only = {n for n in allowed if "_CT_" in n}
    assert draw_cases(shared_data, ct_only, 1, seed=0) == [n for n in first if "_CT_" in n]
    assert set(draw_cases(shared_data, allowed, 50, seed=3)) == allowed  # fewer than asked: all of them
    with pytest.raises(ValueError, match="none of the allowed cases"):
        draw_cases(shared_data, {"not-a-case"}, 1, seed=0)


def test_ptq_records_split_draw_and_seed(split_file, shared_data):
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    add_split_arguments(parser, "train")
    parser.add_argument("--per-modality", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(["--data", str(shared_data), "--split", str(split_file), "--per-modality", "1",
                              "--seed", "2"])
    cases, selection = calibration_cases(args)
    train = set(yaml.safe_load(split_file.read_text())["train"])
    assert set(cases) <= train and len(cases) == len({n.split("_")[1] for n in train})
    assert selection == {"data": "../shared/data", "split": {"file": "split.yaml", "part": "train"},
                         "per_modality": 1, "seed": 2}
    entry = ptq_entry(QuantRecipe(), [], calibration_items(shared_data, cases), "test", selection=selection)
    assert entry["calibration_data"]["cases"] == sorted(cases)
    assert entry["calibration_data"]["split"] == {"file": "split.yaml", "part": "train"}
    assert entry["calibration_data"]["seed"] == 2
