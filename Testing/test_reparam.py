"""DFQ-SAM's quantizer side: scale reparameterization, the log-√2 softmax quantizer, low-bit encoder recipes."""

import numpy as np
import openvino as ov
import pytest
import torch
from brevitas.export import export_onnx_qcdq

from training.datasets.calibration_set import calibration_items
from training.litemedsam import load_litemedsam
from training.qat.checkpoint import quantized_litemedsam
from training.quantization.export_qcdq import convert_quantized, runtime_precisions, save_pair
from training.quantization.quantize import LogSqrt2Quant, QuantMatMul, QuantRecipe, prepare_quantized
from training.quantization.reparam import (
    MIN_SCALE_RATIO,
    channel_ranges,
    norm_linear_pairs,
    range_spread,
    reparameterize,
)

# Two 2D cases: one calibrates (or measures ranges), the other is never seen by the fold or the calibration.
CASES = ["2DBox_CT_sammed2d-amos000475", "2DBox_US_hc18-000"]
LOW_BIT = {"weight_bits": 4, "act_bits": 4, "mask_decoder_bits": 8, "weight_per_channel": True,
           "fold_batchnorm": True, "float_depthwise": True, "keep_float": ["image_encoder.patch_embed"],
           "log2_softmax": True, "reparameterize": True}


@pytest.fixture(scope="module")
def batches(shared_data):
    torch.set_num_threads(2)
    items = calibration_items(shared_data, cases=CASES)
    assert [item.case for item in items] == CASES
    return [(torch.from_numpy(item.image), torch.from_numpy(item.boxes)) for item in items]


@pytest.fixture(scope="module")
def float_model():
    return load_litemedsam().eval()


@pytest.fixture(scope="module")
def reparameterized(batches):
    model = load_litemedsam().eval()
    return model, reparameterize(model, batches[:1])


def _max_relative(actual, expected):
    """Largest absolute difference, relative to the largest magnitude of the expected output."""
    return float((actual - expected).abs().max() / expected.abs().max())


def test_reparameterization_keeps_the_float_model(float_model, reparameterized, batches):
    model, report = reparameterized
    assert len(report) == 2 * 10  # attn.norm -> qkv and mlp.norm -> fc1 in each of 10 TinyViT blocks
    changed = float_model.image_encoder.layers[2].blocks[0].attn.norm.weight
    assert not torch.allclose(model.image_encoder.layers[2].blocks[0].attn.norm.weight, changed)
    with torch.no_grad():
        for images, boxes in batches:  # the image the ranges came from and an unseen one
            expected, actual = float_model.embed(images), model.embed(images)
            assert _max_relative(actual, expected) < 1e-4
            for got, want in zip(model.decode(actual, boxes), float_model.decode(expected, boxes)):
                assert _max_relative(got, want) < 1e-4


def test_reparameterization_evens_out_the_channel_ranges(float_model, reparameterized, batches):
    model, report = reparameterized
    norms = {name: norm for name, norm, _ in norm_linear_pairs(model)}
    float_norms = {name: norm for name, norm, _ in norm_linear_pairs(float_model)}
    before = channel_ranges(float_model, batches[:1], float_norms)
    after = channel_ranges(model, batches[:1], norms)
    for row in report:
        low, high = after[row["layer"]]
        half, centre = (high - low) / 2, (high + low) / 2
        half_before = (before[row["layer"]][1] - before[row["layer"]][0]) / 2
        target = half_before.mean()
        # Near-constant channels (14 of 128 in the first attention: LayerNorm weights below 1e-3) keep k at its
        # floor and stay narrow; every other channel now spans exactly [−r̄, r̄] on the measured batch.
        floored = half_before < MIN_SCALE_RATIO * target
        assert floored.float().mean() < 0.15
        assert torch.allclose(half[~floored], target.expand((~floored).sum()), rtol=1e-3)
        assert torch.all(half[floored] < target)
        assert centre.abs().max() < 1e-3 * target
        assert range_spread(low, high)["spread"] == pytest.approx(row["spread_after"], rel=1e-3)
        assert row["spread_after"] < row["spread_before"]
    # On the unseen image the ranges are not exactly even, but much more so than before the fold.
    unseen_before = channel_ranges(float_model, batches[1:], float_norms)
    unseen_after = channel_ranges(model, batches[1:], norms)
    before = [range_spread(*unseen_before[name]) for name in norms]
    after = [range_spread(*unseen_after[name]) for name in norms]
    assert np.median([r["spread"] for r in after]) < 0.6 * np.median([r["spread"] for r in before])
    assert np.median([r["coverage"] for r in after]) > 1.3 * np.median([r["coverage"] for r in before])


def test_log_sqrt2_quantizer_values_and_gradient():
    quant = LogSqrt2Quant(4)  # levels 2^0, 2^-0.5, ..., 2^-7 (q = 0..14) and 0 (q = 15, the top level)
    x = torch.tensor([1.0, 0.0, 2 ** -1.5, 2 ** -7, 2 ** -7.5, 0.8, 2 ** -1.2])
    expected = torch.tensor([1.0, 0.0, 2 ** -1.5, 2 ** -7, 0.0, 2 ** -0.5, 2 ** -1.0])
    assert torch.equal(quant(x), expected)
    grid = torch.linspace(0, 1, 20001)
    out = quant(grid)
    assert torch.all(out[1:] >= out[:-1])
    assert len(torch.unique(out)) == 16
    kept = grid > 2 ** -7.25  # above the zero level: within a quarter octave of the input
    assert torch.all((out[kept] / grid[kept] - 1).abs() <= 2 ** 0.25 - 1 + 1e-6)
    x = torch.rand(64, requires_grad=True)
    y = quant(x)
    assert torch.equal(y.detach(), quant(x.detach()))
    (y * torch.arange(64.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(64.0))  # straight through


@pytest.fixture(scope="module")
def low_bit(batches):
    model = load_litemedsam().eval()
    preparation = prepare_quantized(model, QuantRecipe.from_dict(LOW_BIT), batches[:1])
    return model, preparation


def test_low_bit_encoder_with_8_bit_decoder_prepares_and_runs(low_bit, float_model, batches):
    model, preparation = low_bit
    assert QuantRecipe.from_dict(LOW_BIT).precision == "int4-dec8"
    assert preparation.calibration_batches == 1 and len(preparation.reparameterized) == 20
    quantized = [row for row in preparation.layers if row["quantized"]]
    for part, bits in (("image_encoder", 4), ("mask_decoder", 8)):
        rows = [row for row in quantized if row["layer"].startswith(part)]
        assert rows and all(row.get("weight_bits", bits) == bits for row in rows)
        assert all(row["act_bits"] in (bits, [bits, bits]) for row in rows)
        log_quants = [m.a_quant for m in getattr(model, part).modules() if isinstance(m, QuantMatMul)
                      and isinstance(m.a_quant, LogSqrt2Quant)]
        assert len(log_quants) == (10 if part == "image_encoder" else 7)  # every attn·v
        assert {q.bits for q in log_quants} == {bits}
    images, boxes = batches[1]
    with torch.no_grad():
        logits, iou = model(images, boxes)
        embedding = float_model.embed(images)  # the 8-bit decoder alone, on the float embedding
        decoded, float_decoded = model.decode(embedding, boxes)[0], float_model.decode(embedding, boxes)[0]
    assert torch.isfinite(logits).all() and torch.isfinite(iou).all()
    assert ((decoded > 0) == (float_decoded > 0)).float().mean() > 0.99  # measured 0.998


def test_reparameterized_checkpoint_rebuilds_the_same_model(low_bit, batches):
    model, _ = low_bit
    recipe = QuantRecipe.from_dict(LOW_BIT)
    rebuilt, _ = quantized_litemedsam(recipe, recipe.parts, model.state_dict())
    images, boxes = batches[1]
    with torch.no_grad():
        for a, b in zip(model(images, boxes), rebuilt(images, boxes)):
            assert torch.equal(a, b)


CFG = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}


def _relative(actual, expected):
    return float((actual - expected).norm() / expected.norm())


def test_low_bit_model_exports_to_openvino(low_bit, batches, tmp_path):
    model, _ = low_bit
    encoder, decoder, _ = convert_quantized(model)  # ~40-80 s on 2 shared cores
    save_pair(encoder, decoder, tmp_path)
    runs = {part: runtime_precisions(tmp_path / f"{part}.xml") for part in ("encoder", "decoder")}
    # 4-bit QCDQ still becomes int8 kernels; the log-√2 operand (float ops) leaves every attn·v a f32 MatMul.
    assert runs["encoder"].get("FullyConnected i8") == 40 and "FullyConnected f32" not in runs["encoder"]
    assert runs["encoder"].get("MatMul i8") == 10 and runs["encoder"].get("MatMul f32") == 10
    assert runs["decoder"].get("MatMul f32") == 7
    images, boxes = batches[1]
    with torch.no_grad():
        embedding = model.embed(images)
        logits, _ = model.decode(embedding, boxes)
    core = ov.Core()
    got = core.compile_model(tmp_path / "encoder.xml", "CPU", CFG)({0: images.numpy()})[0]
    assert got.shape == (1, 256, 64, 64) and np.isfinite(got).all()
    # The whole W4A4 encoder is not compared to torch's: it is chaotic (noise of 1e-5 on the input image moves
    # torch's own embedding to cosine ~0.4), so single 4-bit rounding differences decide. Its blocks are
    # compared one by one below; the 8-bit decoder is stable and compared whole (measured relative 0.024).
    out = core.compile_model(tmp_path / "decoder.xml", "CPU", CFG)({"image_embedding": embedding.numpy(),
                                                                   "boxes": boxes.numpy()})
    ov_logits = torch.from_numpy(out["low_res_logits"])
    assert _relative(ov_logits, logits) < 0.1
    assert ((ov_logits > 0) == (logits > 0)).float().mean() > 0.99


@pytest.mark.parametrize("stage, block", [(1, 0), (2, 5)])  # 7x7 windows on 128x128, 14x14 on 64x64: both pad
def test_low_bit_encoder_block_runs_in_openvino_like_torch(low_bit, batches, tmp_path, stage, block):
    """One W4A4 TinyViT block with its log-√2 softmax and folded LayerNorm, on its real input from an image."""
    model, _ = low_bit
    module = model.image_encoder.layers[stage].blocks[block]
    seen = {}
    handle = module.register_forward_hook(lambda _m, inputs, output: seen.update(x=inputs[0], y=output))
    with torch.no_grad():
        model.embed(batches[1][0])
        handle.remove()
        export_onnx_qcdq(module, args=(seen["x"],), export_path=str(tmp_path / "block.onnx"), opset_version=17,
                         dynamo=False)
    got = torch.from_numpy(ov.Core().compile_model(tmp_path / "block.onnx", "CPU", CFG)({0: seen["x"].numpy()})[0])
    # Measured 0.0012-0.0025 of the block's output (a few activations one 4-bit level apart); 4x margin.
    assert _relative(got, seen["y"]) < 0.01


def test_qat_student_encoder_is_reparameterized_before_it_is_quantized(shared_data, float_model):
    from training.datasets.cases import BoxPromptDataset, discover
    from training.provenance import REPO_ROOT
    from training.qat.config import load_stage_config
    from training.qat.train import build_student

    config = load_stage_config(REPO_ROOT / "training" / "configs" / "qat-stage1.yaml",
                               ["calibration_samples=1", "calibration_per_modality=null"])
    train = BoxPromptDataset([f for f in discover([shared_data]) if f.case == CASES[1]], augment=False)
    model, report = build_student(config, QuantRecipe.from_dict(LOW_BIT), train, None)
    assert report and all(row["layer"].startswith("image_encoder") for row in report)
    for name in ("layers.1.blocks.0.attn", "layers.3.blocks.1.mlp"):
        student, teacher = model.image_encoder.get_submodule(name), float_model.image_encoder.get_submodule(name)
        first, float_first = (student.qkv, teacher.qkv) if hasattr(student, "qkv") else (student.fc1, teacher.fc1)
        assert not torch.allclose(student.norm.weight, teacher.norm.weight)
        # k cancels between the LayerNorm weight (γ/k) and the Linear's input columns (W·k).
        assert torch.allclose(first.weight * student.norm.weight, float_first.weight * teacher.norm.weight,
                              rtol=1e-4, atol=1e-7)
