"""Quantization as a transformation of the one model, QCDQ export, and the shipped INT8 model at run time."""

import json

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
from qmedsam.catalogue import CATALOGUE_FILE, find_model, models_dir
from qmedsam.engine import Segmenter, segment_case
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case
from qmedsam.preprocess import to_model_input
from torch import nn

from training.litemedsam import load_litemedsam
from training.litemedsam.layers import MatMul
from training.provenance import REPO_ROOT
from training.quantization.export_qcdq import (
    compile_f32,
    convert_quantized,
    fold_weight_clips,
    runtime_layers,
    runtime_precisions,
)
from training.quantization.module_names import module_name_matches
from training.quantization.ptq import load_recipe
from training.quantization.quantize import QuantMatMul, QuantRecipe, calibrate, fold_batchnorm, quantize

INT8_MODEL = "litemedsam-int8-ptq"


@pytest.fixture(scope="module")
def float_model():
    torch.set_num_threads(2)
    return load_litemedsam().eval()


@pytest.fixture(scope="module")
def us_image(shared_data):
    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    return torch.from_numpy(np.ascontiguousarray(to_model_input(case.image)[0]))


def _count(module, types):
    return sum(isinstance(m, types) for m in module.modules())


def test_recipe_rejects_unknown_fields_and_parts():
    with pytest.raises(ValueError, match="weight_bitz"):
        QuantRecipe.from_dict({"weight_bitz": 8})
    with pytest.raises(ValueError, match="prompt_encoder"):
        QuantRecipe.from_dict({"parts": ["prompt_encoder"]})
    recipe = QuantRecipe.from_dict({"weight_per_channel": True, "keep_float": ["image_encoder.neck"]})
    assert QuantRecipe.from_dict(recipe.to_dict()) == recipe


def test_new_recipe_fields_default_to_the_old_behaviour_and_label_the_precision():
    for name in ("recipe-int8.yaml", "recipe-paper.yaml"):  # written before the fields existed
        recipe = load_recipe(REPO_ROOT / "training" / "configs" / name)
        assert recipe.mask_decoder_bits is None and not recipe.log2_softmax and not recipe.reparameterize
        assert recipe.precision == "int8" and recipe.bits("mask_decoder") == (8, 8)
    shipped = json.loads((models_dir() / CATALOGUE_FILE).read_text(encoding="utf-8"))["models"]
    recorded = [QuantRecipe.from_dict(entry["recipe"]) for entry in shipped if "recipe" in entry]
    assert len(recorded) >= 2 and all(recipe.precision == "int8" for recipe in recorded)
    low = QuantRecipe.from_dict({"weight_bits": 4, "act_bits": 4, "mask_decoder_bits": 8, "log2_softmax": True,
                                 "reparameterize": True})
    assert low.bits("image_encoder") == (4, 4) and low.bits("mask_decoder") == (8, 8)
    assert low.precision == "int4-dec8" and QuantRecipe.from_dict(low.to_dict()) == low
    assert QuantRecipe.from_dict(dict(low.to_dict(), parts=["image_encoder"])).precision == "int4"
    assert QuantRecipe.from_dict({"mask_decoder_bits": 8}).precision == "int8"
    assert QuantRecipe.from_dict({"weight_bits": 6, "act_bits": 8}).precision == "w6a8"


def test_batchnorm_folding_keeps_the_embedding(float_model, us_image):
    model = load_litemedsam().eval()
    assert fold_batchnorm(model) == _count(float_model, nn.BatchNorm2d) > 0
    assert _count(model, nn.BatchNorm2d) == 0
    with torch.no_grad():
        expected, folded = float_model.embed(us_image), model.embed(us_image)
    assert torch.allclose(folded, expected, rtol=1e-4, atol=1e-4)


def test_paper_recipe_quantizes_every_matmul_of_encoder_and_decoder_only(float_model):
    model = load_litemedsam().eval()
    report = quantize(model, QuantRecipe())
    layers = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, MatMul)
    expected = _count(float_model.image_encoder, layers) + _count(float_model.mask_decoder, layers)
    assert len(report) == expected and all(row["quantized"] for row in report)
    assert all(row.get("weight_bits", 8) == 8 and row["act_bits"] in (8, [8, 8]) for row in report)
    assert _count(model.image_encoder, QuantMatMul) == 2 * 10  # q·kᵀ and attn·v in each of 10 TinyViT blocks
    assert _count(model.mask_decoder, QuantMatMul) == 2 * 7 + 1  # 7 attentions + the hypernetwork product
    # What stays float: the prompt encoder, norms, activations.
    assert _count(model.prompt_encoder, (nn.Linear, nn.Conv2d)) == _count(float_model.prompt_encoder,
                                                                          (nn.Linear, nn.Conv2d))
    assert _count(model, nn.LayerNorm) == _count(float_model, nn.LayerNorm)


def test_measured_recipe_keeps_depthwise_and_patch_embedding_float():
    model = load_litemedsam().eval()
    recipe = QuantRecipe.from_dict({"float_depthwise": True, "keep_float": ["image_encoder.patch_embed"]})
    report = {row["layer"]: row for row in quantize(model, recipe)}
    kept = [name for name, row in report.items() if not row["quantized"]]
    assert report["image_encoder.layers.0.blocks.0.conv2.c"]["reason"] == "float_depthwise"
    assert report["image_encoder.patch_embed.seq.0.c"]["reason"] == "keep_float"
    assert len(kept) == 15 + 2  # 2 MBConv + 3 patch-merging + 10 local depthwise convs, 2 patch-embed convs
    assert isinstance(model.image_encoder.layers[0].blocks[0].conv2.c, nn.Conv2d)


def test_keep_float_patterns_name_whole_modules_and_a_pattern_that_names_none_is_refused():
    model = load_litemedsam().eval()
    recipe = QuantRecipe.from_dict({"keep_float": ["image_encoder.layers.*.local_conv"]})
    kept = [row["layer"] for row in quantize(model, recipe) if not row["quantized"]]
    assert len(kept) == 10 and all(name.endswith(".local_conv.c") for name in kept)  # the MBConv ones quantized
    # A prefix ends at a name boundary: "layers.1" must not also keep layers.10+ (or "blocks.1" blocks.11) float.
    assert module_name_matches("image_encoder.layers.1.blocks.0", "image_encoder.layers.1")
    assert not module_name_matches("image_encoder.layers.10", "image_encoder.layers.1")
    with pytest.raises(ValueError, match="local_convv"):
        quantize(load_litemedsam().eval(), QuantRecipe.from_dict({"keep_float": ["image_encoder.*.local_convv"]}))


def test_depthwise_inputs_per_channel_get_one_scale_per_channel_and_run_int8():
    from brevitas.graph.calibrate import calibration_mode  # after quantize's import, which silences a Brevitas notice

    model = load_litemedsam().eval()
    recipe = QuantRecipe.from_dict({"parts": ["image_encoder"], "weight_per_channel": True, "unsigned_inputs": True,
                                    "depthwise_inputs_per_channel": True,
                                    "keep_float": ["image_encoder.layers.*.local_conv", "image_encoder.layers.1",
                                                   "image_encoder.layers.2", "image_encoder.layers.3"]})
    quantize(model, recipe)
    depthwise, dense = model.image_encoder.layers[0].blocks[0].conv2.c, model.image_encoder.layers[0].blocks[0].conv1.c
    images = torch.rand(2, 3, 256, 256)
    with torch.no_grad(), calibration_mode(model.image_encoder):
        model.image_encoder(images)
    assert depthwise.input_quant.scale().shape == (1, depthwise.in_channels, 1, 1)
    assert depthwise.input_quant.is_signed and dense.input_quant.scale().numel() == 1  # only depthwise layers
    # The shipped default: stage 0's two MBConv depthwise convolutions run OpenVINO's int8 depthwise kernel.
    entry = find_model(INT8_MODEL)
    stage0 = [precision for name, _, precision in runtime_layers(compile_f32(entry.folder / entry.encoder))
              if "/layers.0/blocks." in name and name.endswith("conv2/c/Conv/WithoutBiases")]
    assert stage0 == ["u8", "u8"]


def test_folded_decoder_recipe_quantizes_the_products_that_run_at_inference(float_model, us_image):
    """fold_decoder_projections and upscaling_as_1x1 switch the exact re-associations on before the quantizers are
    placed: the folded per-box products and the 1x1 upscaling convolutions are what gets quantized and
    calibrated, and the calibrated model still follows the float decoder."""
    model = load_litemedsam().eval()
    recipe = QuantRecipe.from_dict({"parts": ["mask_decoder"], "fold_decoder_projections": True,
                                    "upscaling_as_1x1": True})
    layers = {row["layer"]: row for row in quantize(model, recipe)}
    transformer = model.mask_decoder.transformer
    assert transformer.layers[1].cross_attn_token_to_image.fold_keys
    assert transformer.layers[1].cross_attn_image_to_token.fold_queries
    assert not transformer.layers[0].cross_attn_token_to_image.fold_keys  # batch-1 image side: computed once
    assert model.mask_decoder.fold_last_upscaling
    for index in (0, 3):  # each transposed convolution became a quantized 1x1 convolution to 4x the channels
        assert layers[f"mask_decoder.output_upscaling.{index}.expand"]["type"] == "Conv2d"
        assert type(model.mask_decoder.output_upscaling[index].expand).__name__ == "QuantConv2d"
    assert not any(row["type"] == "ConvTranspose2d" for row in layers.values())
    boxes = torch.tensor([[60.0, 80.0, 190.0, 170.0], [20.0, 20.0, 120.0, 110.0]])
    with torch.no_grad():
        embedding = float_model.embed(us_image)
        calibrate(model, [(us_image, boxes)])
        expected, _ = float_model.decode(embedding, boxes)
        logits, _ = model.decode(embedding, boxes)
    agreement = ((logits > 0) & (expected > 0)).sum() * 2 / ((logits > 0).sum() + (expected > 0).sum())
    assert agreement > 0.95


def test_weight_clip_folding_changes_no_number(tmp_path):
    from brevitas.export import export_onnx_qcdq

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.GELU(), nn.Conv2d(8, 4, 1)).eval()
    wrapper = nn.Module()
    wrapper.image_encoder, wrapper.mask_decoder = net, nn.Identity()
    quantize(wrapper, QuantRecipe.from_dict({"parts": ["image_encoder"]}))
    x = torch.randn(1, 4, 12, 12)
    calibrate(wrapper.image_encoder, [])  # no batches: scales stay at their statistics-free init
    with torch.no_grad():
        net.train()
        for _ in range(3):
            net(x)
        net.eval()
        expected = net(x).numpy()
    path = tmp_path / "net.onnx"
    export_onnx_qcdq(net, args=(x,), export_path=str(path), opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    clips_before = sum(node.op_type == "Clip" for node in model.graph.node)
    assert fold_weight_clips(model) == 2 and clips_before >= 2
    onnx.save(model, str(path))
    actual = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: x.numpy()})[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())


def _fake_quantize_after(layout: list, shape: list) -> ov.Model:
    """A model: input of `shape` -> the `layout` ops ((op, argument) pairs) -> a per-tensor 8-bit FakeQuantize."""
    import openvino.opset13 as opset

    image = opset.parameter(shape, ov.Type.f32)
    value = image.output(0)
    for op, argument in layout:
        value = (opset.reshape(value, opset.constant(np.array(argument, np.int64)), False) if op == "Reshape"
                 else opset.transpose(value, opset.constant(np.array(argument, np.int64)))).output(0)
    rank = len(value.get_partial_shape())
    low, high = (opset.constant(np.full([1] * rank, v, np.float32)) for v in (-1.0, 1.0))
    return ov.Model([opset.fake_quantize(value, low, high, low, high, 256).output(0)], [image])


@pytest.mark.parametrize("layout, shape, moves", [
    ([("Reshape", [2, 8, 16])], [2, 8, 4, 4], True),  # image flattened to tokens (the hypernetwork product)
    ([("Transpose", [0, 2, 1]), ("Reshape", [2, 8, 4, 4])], [2, 16, 8], True),  # tokens back to an image
    ([("Transpose", [0, 2, 1, 3])], [2, 3, 5, 8], False),  # an attention's head transpose: left to OpenVINO
])
def test_quantizers_move_above_image_token_layout_changes_exactly(layout, shape, moves):
    from training.quantization.export_qcdq import hoist_quantize_above_layout

    model = _fake_quantize_after(layout, shape)
    x = np.random.default_rng(0).uniform(-1.5, 1.5, shape).astype(np.float32)
    before = ov.Core().compile_model(model, "CPU")(x)[0]
    assert hoist_quantize_above_layout(model) == int(moves)
    quantize = next(op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    assert (quantize.input_value(0).get_node().get_type_name() == "Parameter") == moves
    after = ov.Core().compile_model(model, "CPU")(x)[0]
    # the same quantization levels (the float op order of a standalone FakeQuantize may differ by an ulp)
    levels = [np.rint((y + 1.0) / 2.0 * 255) for y in (before, after)]
    assert after.shape == before.shape and np.array_equal(*levels)


def test_shipped_decoder_quantizes_image_tokens_before_turning_them_into_an_image():
    """The first upscaling convolution's input: the quantizer comes before the Transpose and Reshape (export_qcdq's
    hoist), so OpenVINO moves int8, not float, data (a float Transpose of 16 x 256 x 4096 cost ~40 ms)."""
    entry = find_model(INT8_MODEL)
    decoder = ov.Core().read_model(str(entry.folder / entry.decoder))
    first = next(op for op in decoder.get_ordered_ops() if op.get_type_name() == "Convolution")
    chain, node = [], first.input_value(0).get_node()
    while node.get_type_name() in ("Reshape", "Transpose", "FakeQuantize"):
        chain.append(node.get_type_name())
        node = node.input_value(0).get_node()
    assert chain == ["Reshape", "Transpose", "FakeQuantize"]


def test_shipped_int8_model_runs_int8_kernels():
    entry = find_model(INT8_MODEL)
    encoder = runtime_precisions(entry.folder / entry.encoder)
    decoder = runtime_precisions(entry.folder / entry.decoder)
    # Every TinyViT Linear (qkv, proj, fc1, fc2 in 10 blocks), every 1x1/3x3 dense convolution and stage 0's
    # two MBConv depthwise convolutions in int8 (u8 inputs with a zero point; the depthwise ones per channel);
    # only the float-by-recipe depthwise (13) and patch-embedding (2) convolutions stay f32.
    assert encoder.get("FullyConnected u8", 0) + encoder.get("FullyConnected i8", 0) == 40
    assert "FullyConnected f32" not in encoder and encoder.get("Convolution f32") == 15
    # The folded decoder (fold_decoder_projections): 31 Linear layers remain, all int8; the attention
    # products with activations on both sides run in int8 (MatMul or, on VNNI/AMX, fused Snippets Subgraphs);
    # f32 MatMuls are the 3 float-by-recipe softmax . V products and the folded products with the layers' weights.
    assert decoder.get("FullyConnected u8", 0) + decoder.get("FullyConnected i8", 0) == 31
    assert decoder.get("MatMul f32", 0) <= 8
    # upscaling_as_1x1: both upscaling steps run as int8 1x1 convolutions on unsigned inputs, no transposed
    # convolution (int8 ones ran 2-3x slower than a 1x1 convolution on AVX2 CPUs).
    assert decoder.get("Convolution u8") == 2 and not any(kind.startswith("Deconvolution") for kind in decoder)
    assert decoder.get("MatMul i8", 0) + decoder.get("MatMul u8", 0) + decoder.get("Subgraph i8", 0) >= 8


def _per_box_image_token_projections(decoder: ov.Model) -> list[str]:
    """MatMuls of a weight with the 4,096 image tokens of every box (batch dimension dynamic, i.e. per box)."""
    def constant(value, depth=0):  # a weight, possibly behind its dequantization (Convert, Subtract, Multiply)
        node = value.get_node()
        return node.get_type_name() == "Constant" or (node.get_type_name() != "Parameter" and depth < 6 and all(
            constant(node.input_value(i), depth + 1) for i in range(node.get_input_size())))
    found = []
    for op in decoder.get_ordered_ops():
        tokens = op.input_value(0).get_partial_shape() if op.get_type_name() == "MatMul" else None
        if (tokens is not None and tokens.rank.get_length() == 3 and tokens[0].is_dynamic
                and tokens[1].is_static and tokens[1].get_length() == 4096 and constant(op.input_value(1))):
            found.append(op.get_friendly_name())
    return found


def test_shipped_decoder_projects_no_image_token_per_box():
    """fold_decoder_projections: the unfolded decoder projected all 4,096 image tokens 7 times per box (the
    `litemedsam-int8-ptq` before it had exactly these 7); folded, only the first layer's batch-1 projections
    remain, computed once per image."""
    entry = find_model(INT8_MODEL)
    assert QuantRecipe.from_dict(entry.record["recipe"]).fold_decoder_projections
    assert _per_box_image_token_projections(ov.Core().read_model(str(entry.folder / entry.decoder))) == []
    unfolded = load_litemedsam().eval()
    quantize(unfolded, QuantRecipe.from_dict({"parts": ["mask_decoder"]}))
    calibrate(unfolded, [])
    _, decoder, _ = convert_quantized(unfolded)
    assert len(_per_box_image_token_projections(decoder)) == 7


def test_int8_model_runs_through_the_engine_like_fp32(shared_data, fp32_model):
    case = load_npz_case(shared_data / "imgs" / "2DBox_Endoscopy_kvasir-cju0roawvklr.npz")
    results = [segment_case(Segmenter(name, threads=2), case.kind, case.image, case.boxes)
               for name in ("litemedsam-fp32", INT8_MODEL)]
    assert set(np.unique(results[1])) == {0, 1, 2}
    assert label_agreement(results[1], results[0]) >= 0.95
