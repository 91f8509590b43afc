"""How close the default INT8 model's masks stay across x86 instruction sets (issue 13).

Its masks differ between AVX2 and AVX-512 because the float code around the int8 kernels differs in the
last bit and every requantization amplifies it (docs/int8.md): a floor is asserted, and the issue's goal
(Dice >= 0.99 per case) is an expected failure until that is solved. The portable recipe's guarantee that
no 16-bit sum saturates is checked exactly.

Each run is a subprocess with ONEDNN_MAX_CPU_ISA set (oneDNN reads it once per process), so this one CPU
stands in for an AVX2 laptop and an AVX-512 VNNI machine; only approximately for the laptop, since
OpenVINO's MVN, RMS and Reduce kernels keep AVX-512 code under the cap (Testing/test_isa_policy.py). Needs a
CPU with AVX-512 VNNI (else the two caps would run the same kernels and prove nothing).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from qmedsam.catalogue import find_model
from qmedsam.metrics import label_agreement

from training.catalogue_writer import set_field
from training.evaluation.isa_agreement import run_under_isa, verified_isas

REPO_ROOT = Path(__file__).resolve().parents[1]

CASES = ["2DBox_CT_sammed2d-amos000475", "2DBox_Dermoscopy_ham10000-ISIC0027001", "2DBox_US_hc18-000"]
# Measured for the default (recipe-int8-upscaling-1x1), AVX2 cap vs VNNI on an AMD EPYC: CT 0.8204,
# dermoscopy 0.9880, US 0.9318 (docs/measurements/isa-agreement-upscaling.json; the default before it, the same
# encoder: 0.8231 / 0.9880 / 0.9316; its step 1, the folded decoder alone: 0.8682 / 0.9938 / 0.9547). The goal
# is 0.99.
FLOOR = 0.80


def _cpu_flags() -> set:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_saturation_free_recipe_keeps_int8_weights_within_63():
    """vpmaddubsw (CPUs without VNNI) adds two u8 x s8 products in int16: 2 * 255 * 63 = 32130 fits, 2 * 255 * 127
    does not. The portable recipe's weights must stay within +-63 and its Linear inputs be unsigned."""
    import torch
    from torch import nn

    from training.quantization.ptq import load_recipe
    from training.quantization.quantize import _quant_layer

    recipe = load_recipe(REPO_ROOT / "training" / "configs" / "recipe-int8-portable.yaml")
    assert recipe.saturation_free_weights and recipe.unsigned_inputs
    torch.manual_seed(0)
    layer = _quant_layer(nn.Linear(64, 32), recipe, "image_encoder")
    integers = layer.quant_weight().int()
    assert int(integers.abs().max()) == 63  # the per-channel maximum maps to the top of the 7-bit range
    assert not layer.input_quant.is_signed


needs_vnni = pytest.mark.skipif("avx512_vnni" not in _cpu_flags(), reason="needs a CPU with AVX-512 VNNI")


@pytest.fixture(scope="module")
def masks_per_isa(shared_data, tmp_path_factory) -> dict:
    """{isa: {case: mask}} of the default model on CASES, each ISA in a subprocess of its own."""
    folder, default, runs = tmp_path_factory.mktemp("isa"), find_model(None).name, {}
    for isa in ("AVX2", "AVX512_CORE_VNNI"):
        run_under_isa(default, isa, shared_data, CASES, folder / f"{isa}.npz")
        with np.load(folder / f"{isa}.npz") as arrays:
            runs[isa] = {key.split("/", 1)[1]: arrays[key] for key in arrays.files if key.startswith("mask/")}
    return runs


def _dice_per_case(runs: dict) -> dict:
    assert sorted(runs["AVX2"]) == CASES and all(mask.any() for mask in runs["AVX2"].values())
    return {case: label_agreement(mask, runs["AVX512_CORE_VNNI"][case]) for case, mask in runs["AVX2"].items()}


@pytest.mark.slow
@needs_vnni
def test_default_model_masks_stay_close_between_avx2_and_avx512_vnni(masks_per_isa):
    """What the shipped recipe guarantees today (docs/int8.md): no case falls apart between ISAs."""
    for case, dice in _dice_per_case(masks_per_isa).items():
        assert dice >= FLOOR, f"{case}: Dice {dice:.4f} between AVX2 and AVX512_CORE_VNNI"


@pytest.mark.slow
@needs_vnni
@pytest.mark.xfail(strict=True, reason="issue 13's goal, not met: AVX2 and AVX-512 float kernels differ in the last "
                   "bit and requantization amplifies it (docs/int8.md)")
def test_default_model_masks_agree_between_avx2_and_avx512_vnni(masks_per_isa):
    for case, dice in _dice_per_case(masks_per_isa).items():
        assert dice >= 0.99, f"{case}: Dice {dice:.4f} between AVX2 and AVX512_CORE_VNNI"


def test_the_cross_isa_result_is_recorded_in_the_models_entry(tmp_path):
    rows = [{"case": c, "isas": "AVX2 vs AVX512_CORE_VNNI", "dice": d, "embedding_rel_l2": 0.1}
            for c, d in (("a", 1.0), ("b", 0.995), ("c", 0.8))]
    record = verified_isas(rows, ["AVX2", "AVX512_CORE_VNNI"], REPO_ROOT / "docs" / "x.json")
    pair = record["pairs"]["AVX2 vs AVX512_CORE_VNNI"]
    assert pair == {"mask_dice_mean": 0.9317, "mask_dice_min": 0.8, "cases_at_least_0.99": 2, "cases": 3,
                    "identical": False}
    assert record["artifact"] == "docs/x.json" and record["cpu"]
    (tmp_path / "models.json").write_text(json.dumps({"models": [{"name": "m"}, {"name": "n"}]}))
    set_field("m", "verified_isas", record, models_dir=tmp_path)
    models = json.loads((tmp_path / "models.json").read_text())["models"]
    assert models[0]["verified_isas"] == record and "verified_isas" not in models[1]
    with pytest.raises(SystemExit, match="no model 'z'"):
        set_field("z", "verified_isas", record, models_dir=tmp_path)
