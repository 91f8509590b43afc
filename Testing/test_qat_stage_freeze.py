"""QAT stage 1 trains the quantized image encoder only: the float prompt encoder and mask decoder it
leaves must come out of a real training epoch bit-identical to LiteMedSAM's."""

import pytest
import torch

from training.litemedsam import load_litemedsam
from training.provenance import REPO_ROOT
from training.qat import train as qat
from training.qat.checkpoint import load_checkpoint

FROZEN_IN_STAGE_1 = ("prompt_encoder.", "mask_decoder.")


@pytest.mark.slow
def test_stage_1_leaves_the_decoder_weights_unchanged(tmp_path, shared_data):
    out = tmp_path / "stage1"
    qat.main(["--config", str(REPO_ROOT / "training" / "configs" / "qat-stage1.yaml"),
              "--set", "cases=[2DBox_US_hc18-000,2DBox_XRay_covidseg-ARDSSevere]",
              "--set", "warmup_epochs=1", "--set", "cosine_epochs=1", "--set", "val_samples=1",
              "--set", "calibration_samples=1", "--set", "calibration_per_modality=null",
              "--set", "batch_size=1", "--set", "samples_per_modality=1",
              "--set", "threads=2", "--set", f"output_dir={out}", "--set", f"data=[{shared_data}]", "--device", "cpu"])
    trained = load_checkpoint(out / "last.pt")
    # The cases it records having seen are those a replay of its config finds (training/qat/seen.py).
    seen = trained["cases_seen"]
    assert seen == qat.checkpoint_seen({k: v for k, v in trained.items() if k != "cases_seen"})
    assert seen["calibration"] and seen["training"] and seen["selection"]
    assert set(seen["training"]) <= {"2DBox_US_hc18-000", "2DBox_XRay_covidseg-ARDSSevere"}
    (epoch,) = [record for record in trained["history"] if record["epoch"] == 0]
    assert epoch["lr"] > 0 and epoch["train_grad_norm"] > 0  # an SGD step with a real gradient was taken

    state = trained["model"]
    original = {name: tensor for name, tensor in load_litemedsam().state_dict().items()
                if name.startswith(FROZEN_IN_STAGE_1)}
    assert len(original) > 50
    for name, tensor in original.items():
        assert name in state, f"{name} missing from the stage-1 checkpoint"
        assert torch.equal(state[name], tensor), f"stage 1 changed {name}"
