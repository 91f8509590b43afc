"""Which quantized layers of the mask decoder cost INT8 its Dice: one decoder-only PTQ per variant (a set of
layers kept float), each paired with one fixed INT8 image encoder, all scored on the split's validation list.

    python -m training.evaluation.decoder_study --study training/configs/decoder-study.yaml \\
        --json docs/measurements/decoder-study-validation.json \\
        --markdown docs/measurements/decoder-study-validation.md

The study file names the base recipe, the catalogue model whose INT8 encoder every variant is paired with,
and the variants (`name: [module-name prefixes kept float]`; `float` pairs the encoder with the FP32 model's
decoder). Each variant's decoder is calibrated like the shipped model (`training.quantization.ptq` with the
recipe's `parts` reduced to the mask decoder, the split's train list, 3 cases per modality, seed 0) and
written under runs/decoder-study/; the pairs go into a catalogue of their own there, and
`training.evaluation.split_eval` scores them with the FP32 reference (masks of earlier runs are reused).
Only the validation list is read: this study chose the shipped recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml
from qmedsam.catalogue import find_model

from training.evaluation import split_eval
from training.provenance import REPO_ROOT, sha256_file
from training.quantization import ptq

WORK = REPO_ROOT / "runs" / "decoder-study"
FILES = ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin")


def variant_recipe(base: dict, keep_float: list[str]) -> dict:
    """The base recipe applied to the mask decoder only, with `keep_float` added to its float prefixes."""
    decoder_prefixes = [p for p in base.get("keep_float") or [] if p.startswith("mask_decoder")]
    return {**base, "parts": ["mask_decoder"], "keep_float": decoder_prefixes + list(keep_float)}


def build_decoder(name: str, recipe: dict, work: Path, calibration: list[str]) -> Path:
    """Decoder-only PTQ of one variant into work/decoders; returns the model's folder."""
    recipe_file = work / "recipes" / f"{name}.yaml"
    recipe_file.parent.mkdir(parents=True, exist_ok=True)
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    ptq.main(["--recipe", str(recipe_file), "--name", name, "--models-dir", str(work / "decoders"), *calibration])
    return find_model(name, work / "decoders").folder


def pair_record(name: str, folder: Path, encoder_from: Path, decoder_from: Path) -> dict:
    """Copy one encoder and one decoder into `folder`; the catalogue record of the pair."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        shutil.copy((encoder_from if file.startswith("encoder") else decoder_from) / file, folder / file)
    return {"name": name, "precision": "int8", "calibration": "ptq", "folder": folder.name,
            "encoder": "encoder.xml", "decoder": "decoder.xml",
            "description": f"study pair: encoder of {encoder_from.name}, decoder of {decoder_from.name}",
            "sha256": {f: sha256_file(folder / f) for f in FILES},
            "size": {f: (folder / f).stat().st_size for f in FILES}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=WORK, help="where decoders and pairs are written")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    study = yaml.safe_load(args.study.read_text())
    base = yaml.safe_load((REPO_ROOT / study["base_recipe"]).read_text())
    encoder = find_model(study["encoder_model"]).folder
    float_decoder = find_model(study["float_model"]).folder
    calibration = ["--data", str(REPO_ROOT / study["data"]), "--split", str(REPO_ROOT / study["split"]),
                   "--part", "train", "--per-modality", str(study["per_modality"]), "--seed", str(study["seed"]),
                   "--threads", str(args.threads)]
    pairs = args.work / "pairs"
    records = []
    for name, keep_float in study["variants"].items():
        decoder = float_decoder if keep_float == "float" else build_decoder(
            name, variant_recipe(base, keep_float), args.work, calibration)
        records.append(pair_record(name, pairs / name, encoder, decoder))
    (pairs / "models.json").write_text(json.dumps({"models": records}, indent=1) + "\n")
    models = [study["float_model"]] + [f"{pairs.relative_to(REPO_ROOT)}:{r['name']}" for r in records]
    evaluation = ["--split", str(REPO_ROOT / study["split"]), "--part", "validation", "--threads", str(args.threads)]
    for flag, path in (("--json", args.json), ("--markdown", args.markdown)):
        if path is not None:
            evaluation += [flag, str(path)]
    split_eval.main(models + evaluation)


if __name__ == "__main__":
    main()
