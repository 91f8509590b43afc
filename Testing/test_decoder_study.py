"""The decoder quantization study (training/evaluation/decoder_study.py): its variants name real layers, its
recipes quantize only the decoder, and an encoder/decoder pair it assembles segments like the model it came from."""

import copy
import json

import numpy as np
import pytest
import yaml
from qmedsam.catalogue import find_model
from qmedsam.engine import Segmenter, segment_case
from qmedsam.npz_io import load_npz_case

from training.evaluation.decoder_study import pair_record, variant_recipe
from training.litemedsam import load_litemedsam
from training.provenance import REPO_ROOT
from training.quantization.quantize import QuantRecipe, quantize

STUDY = REPO_ROOT / "training" / "configs" / "decoder-study.yaml"


def test_variant_recipes_quantize_the_decoder_only_and_keep_what_they_name_float():
    study = yaml.safe_load(STUDY.read_text())
    base = yaml.safe_load((REPO_ROOT / study["base_recipe"]).read_text())
    float_model = load_litemedsam()
    for name, keep_float in study["variants"].items():
        if keep_float == "float":
            continue
        recipe = QuantRecipe.from_dict(variant_recipe(base, keep_float))
        assert list(recipe.parts) == ["mask_decoder"]
        report = quantize(copy.deepcopy(float_model), recipe)  # raises if a prefix names no layer
        assert all(row["layer"].startswith("mask_decoder.") for row in report)
        kept = {row["layer"] for row in report if not row["quantized"]}
        for prefix in keep_float:
            assert any(layer.startswith(prefix) for layer in kept), (name, prefix)


def test_a_misspelt_float_prefix_is_refused():
    with pytest.raises(ValueError, match="match no module"):
        quantize(load_litemedsam(), QuantRecipe.from_dict({"parts": ["mask_decoder"],
                                                           "keep_float": ["mask_decoder.transformer.layer.0"]}))


def test_an_assembled_pair_segments_like_its_source_model(tmp_path, shared_data):
    source = find_model("litemedsam-int8-ptq").folder
    record = pair_record("pair", tmp_path / "pair", source, source)
    (tmp_path / "models.json").write_text(json.dumps({"models": [record]}))
    case = load_npz_case(next(iter(sorted((shared_data / "imgs").glob("2D*.npz")))))
    pair = segment_case(Segmenter("pair", threads=2, models_dir=tmp_path), case.kind, case.image, case.boxes)
    shipped = segment_case(Segmenter("litemedsam-int8-ptq", threads=2), case.kind, case.image, case.boxes)
    assert pair.any()
    np.testing.assert_array_equal(pair, shipped)
