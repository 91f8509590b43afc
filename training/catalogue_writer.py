"""Writes model folders and their entries into QMedSAMSlicer/Resources/Models/models.json.

The engine only reads the catalogue (qmedsam.catalogue); every exporter records its files here with their
sha256 and size, the command that made them, the library versions and where the files are published
(qmedsam.model_store fetches them from there), so a model can be reproduced or downloaded. Only the default
model's files are kept in git; the others are build products (.gitignore).
"""

from __future__ import annotations

import json
from pathlib import Path

from qmedsam.model_store import DEFAULT_MODELS_URL

from training.provenance import REPO_ROOT, sha256_file

MODELS_DIR = REPO_ROOT / "QMedSAMSlicer" / "Resources" / "Models"


def published_at(name: str) -> str:
    """The release the model's files are uploaded to: one GitHub release per model, tagged with its name."""
    return f"{DEFAULT_MODELS_URL}/{name}/"


def record_model(entry: dict, models_dir: Path = MODELS_DIR) -> dict:
    """Add or replace `entry` (by name) in the catalogue, filling in the sha256, size and release of its files."""
    folder = models_dir / entry["folder"]
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".xml", ".bin"))
    entry = dict(entry, sha256={name: sha256_file(folder / name) for name in files},
                 size={name: (folder / name).stat().st_size for name in files},
                 published=published_at(entry["name"]))
    catalogue_path = models_dir / "models.json"
    catalogue = json.loads(catalogue_path.read_text()) if catalogue_path.exists() else {"models": []}
    models = [m for m in catalogue["models"] if m["name"] != entry["name"]]
    if entry.get("default"):
        for other in models:
            other["default"] = False
    models.append(entry)
    catalogue["models"] = sorted(models, key=lambda m: m["name"])
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    return entry


def set_default(name: str, models_dir: Path = MODELS_DIR) -> None:
    """Mark `name` as the catalogue's default (the model the engine and the Slicer effect use unasked)."""
    catalogue_path = models_dir / "models.json"
    catalogue = json.loads(catalogue_path.read_text())
    names = [m["name"] for m in catalogue["models"]]
    if name not in names:
        raise SystemExit(f"no model {name!r} in {catalogue_path.name}; models: {', '.join(names)}")
    for model in catalogue["models"]:
        model["default"] = model["name"] == name
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Mark a catalogue model as the default.")
    parser.add_argument("--set-default", required=True, metavar="NAME")
    set_default(parser.parse_args().set_default)
