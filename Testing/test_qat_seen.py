"""The cases a QAT checkpoint says it saw (training/qat/seen.py) and train.qat's --device option."""

import pytest
import torch

from training.datasets.cases import BoxPromptDataset, discover
from training.provenance import REPO_ROOT
from training.qat import train as qat
from training.qat.seen import calibration_seen, case_of, merge, stage_seen

CONFIG = str(REPO_ROOT / "training" / "configs" / "qat-stage1-cpu.yaml")


@pytest.fixture(scope="module")
def train_and_val(shared_data):
    files = discover([shared_data])
    return BoxPromptDataset(files[::2], augment=False), BoxPromptDataset(files[1::2], augment=False)


def _cases(dataset):
    return {f.case for f in dataset.files}


def test_an_untrained_stage_saw_no_training_case_and_later_epochs_add_draws(train_and_val):
    train, val = train_and_val
    untrained = stage_seen(train, 1, 0, -1, val, [0, len(val) - 1])
    assert untrained["training"] == [] and untrained["calibration"] == []
    assert set(untrained["selection"]) == {case_of(val, 0), case_of(val, len(val) - 1)}
    one, two = (stage_seen(train, 1, 0, last, val, [0])["training"] for last in (0, 1))
    modalities = {f.modality for f in train.files}
    assert 1 <= len(one) <= len(modalities)  # one draw per modality and epoch
    assert set(one) <= set(two) <= _cases(train)  # the draws come from training cases only, epoch by epoch
    assert not set(two) & _cases(val)


def test_calibration_cases_and_merge_are_unions_of_names(train_and_val):
    train, _ = train_and_val
    calibration = calibration_seen(train, 3)["calibration"]
    assert 1 <= len(calibration) <= 3 and set(calibration) <= _cases(train)
    merged = merge({"training": ["b", "a"]}, {"training": ["a"], "selection": ["c"]})
    assert merged == {"calibration": [], "training": ["a", "b"], "selection": ["c"]}


def test_device_option_refuses_a_bad_name_and_a_missing_gpu():
    with pytest.raises(SystemExit, match="not a torch device"):
        qat.main(["--config", CONFIG, "--device", "gpu0"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            qat.main(["--config", CONFIG, "--device", "cuda"])


def test_calibration_per_modality_is_ptqs_draw_and_is_what_the_checkpoint_records(train_and_val, shared_data):
    from training.datasets.calibration_set import calibration_items, draw_cases
    from training.qat.config import StageConfig

    train, _ = train_and_val
    config = StageConfig(stage=1, recipe="training/configs/recipe-int8-upscaling-1x1.yaml",
                         quantized_parts=["image_encoder"], trainable_parts=["image_encoder"], output_dir="o",
                         data=[str(shared_data)], calibration_per_modality=1, seed=0)
    ptq_cases = draw_cases(shared_data, sorted(_cases(train)), 1, 0)  # training.quantization.ptq --per-modality 1
    assert qat._seen_before(config, train)["calibration"] == ptq_cases
    batches = list(qat._calibration_batches(config, train))
    items = calibration_items(shared_data, ptq_cases)
    assert len(batches) == len(items) >= len(ptq_cases)
    for (image, boxes), item in zip(batches, items):
        assert torch.equal(image, torch.from_numpy(item.image)) and torch.equal(boxes, torch.from_numpy(item.boxes))
    spread_config = StageConfig(**dict(config.to_dict(), calibration_per_modality=None, calibration_samples=2))
    assert len(list(qat._calibration_batches(spread_config, train))) == 2
    with pytest.raises(ValueError, match="calibration_per_modality"):
        StageConfig(**dict(config.to_dict(), calibration_per_modality=0))


def test_a_chain_chosen_on_the_validation_list_records_all_of_it():
    from training.catalogue_writer import cases_seen
    from training.datasets.cases import split_cases
    from training.qat.export import chosen_on

    entry = {"cases_seen": cases_seen("training/configs/split.yaml", selection=["v1"], note="stages")}
    chosen_on(entry, "training/configs/split.yaml", "validation")
    validation = split_cases(REPO_ROOT / "training/configs/split.yaml", "validation")
    assert set(entry["cases_seen"]["selection"]) == validation | {"v1"}
    assert "whole validation list" in entry["cases_seen"]["note"]
    with pytest.raises(ValueError, match="test"):
        chosen_on(entry, "training/configs/split.yaml", "test")  # the test list never selects
