"""The DFQ-SAM comparison's variants, calibration sources and agreement measure (the table itself is a command)."""

import numpy as np

from training.dfq.table import (
    BASE_RECIPE,
    VALIDATION_CASES,
    ablation_summary,
    agreement_with,
    model_name,
    source_items,
    summary,
    table_order,
    variant_recipe,
)
from training.quantization.ptq import load_recipe


def test_variants_change_only_the_encoder_bits_and_the_dfq_quantizer():
    base = load_recipe(BASE_RECIPE)
    plain, dfq = variant_recipe(base, 4, ""), variant_recipe(base, 4, "-reparam")
    assert plain.bits("image_encoder") == (4, 4) and plain.bits("mask_decoder") == (8, 8)
    assert not plain.reparameterize and not plain.log2_softmax
    assert dfq.reparameterize and dfq.log2_softmax
    assert dict(plain.to_dict(), weight_bits=8, act_bits=8, mask_decoder_bits=None) == base.to_dict()
    assert model_name(4, "synthetic", "-reparam") == "w4a4-synthetic-reparam"


def test_ablation_variants_switch_one_half_of_the_dfq_quantizer_each():
    base = load_recipe(BASE_RECIPE)
    reparam_only, log2_only = variant_recipe(base, 8, "-reparam-only"), variant_recipe(base, 8, "-log2-only")
    assert reparam_only.reparameterize and not reparam_only.log2_softmax
    assert log2_only.log2_softmax and not log2_only.reparameterize
    assert model_name(8, "real", "-log2-only") == "w8a8-real-log2-only"


def test_real_calibration_never_uses_a_validation_case(shared_data, tmp_path):
    items = source_items("real", 8, tmp_path, shared_data)
    assert len(items) == 8
    assert not any(part in item.case for item in items for part in VALIDATION_CASES)
    assert len({item.case for item in items}) >= 4  # spread over the training cases, not one volume


def test_agreement_is_label_dice_between_two_sets_of_masks(tmp_path):
    reference, other = tmp_path / "a", tmp_path / "b"
    reference.mkdir()
    other.mkdir()
    segs = np.zeros((10, 10), dtype=np.uint8)
    segs[2:6, 2:6] = 1
    np.savez_compressed(reference / "case.npz", segs=segs)
    shifted = np.zeros_like(segs)
    shifted[2:6, 4:8] = 1  # half of the square overlaps
    np.savez_compressed(other / "case.npz", segs=shifted)
    assert agreement_with(reference, reference) == 1.0
    assert abs(agreement_with(reference, other) - 0.5) < 1e-9


def test_summary_grid_has_a_row_per_bit_width():
    cases = [{"case": "c", "modality": "CT", "dsc": 0.5, "nsd": 0.5}]
    results = [{"model": "w8a8-noise", "cases": cases, "agreement": 0.9}]
    grid = summary(results, [8, 4], ["noise"])
    assert "| W8A8 | 0.5000 (0.900) | – |" in grid and "| W4A4 | – | – |" in grid
    ablation = ablation_summary(results, [8], ["noise"])
    assert "| W8A8 | noise | 0.5000 (0.900) | – | – | – |" in ablation


def test_table_order_puts_fp32_first_and_the_grid_by_bits_source_and_quantizer():
    names = ["dfq-qat-w8a8", "w4a4-noise", "w8a8-real-reparam", "w8a8-real", "litemedsam-fp32", "w8a8-noise-log2-only",
             "w8a8-noise"]
    ordered = [r["model"] for r in table_order([{"model": name} for name in names])]
    assert ordered == ["litemedsam-fp32", "w8a8-noise", "w8a8-noise-log2-only", "w8a8-real", "w8a8-real-reparam",
                       "w4a4-noise", "dfq-qat-w8a8"]
