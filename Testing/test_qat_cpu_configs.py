"""The CPU-scale QAT configs (qat-*-cpu.yaml) change only the scale of the full ones, and chain on the split."""

from dataclasses import fields

import pytest

from training.provenance import REPO_ROOT
from training.qat.config import StageConfig, load_stage_config

CONFIGS = REPO_ROOT / "training" / "configs"
SCALE = {"samples_per_modality", "warmup_epochs", "cosine_epochs", "val_samples", "calibration_samples", "threads",
         "output_dir", "init_checkpoint", "batch_size"}  # batch 1 where the encoder trains: memory of a shared machine
DATA = {"data", "split", "val_fraction"}  # ours' full configs predate the pool and its split file


@pytest.mark.parametrize("prefix", ["qat-stage", "qat-paper-stage"])
def test_cpu_configs_change_only_the_scale_and_chain_on_the_split(prefix):
    cpu = [load_stage_config(CONFIGS / f"{prefix}{n}-cpu.yaml") for n in (1, 2, 3)]
    for n, small in enumerate(cpu, start=1):
        full = load_stage_config(CONFIGS / f"{prefix}{n}.yaml")
        changed = {f.name for f in fields(StageConfig) if getattr(full, f.name) != getattr(small, f.name)}
        assert changed <= SCALE | DATA, f"{prefix}{n}-cpu.yaml changes {sorted(changed - SCALE - DATA)}"
        assert small.split == "training/configs/split.yaml" and small.data == ("../pool",)
        assert small.output_dir.startswith("runs/qat-cpu/") and small.epochs >= 1
    assert cpu[0].init_checkpoint is None
    assert [c.init_checkpoint for c in cpu[1:]] == [c.output_dir + "/best.pt" for c in cpu[:2]]
    assert len({c.val_samples for c in cpu}) == 1  # every stage is validated on the same slices
