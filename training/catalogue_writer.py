"""Writes model folders and their entries into QMedSAMSlicer/Resources/Models/models.json.

The engine only reads the catalogue (qmedsam.catalogue); every exporter records its files here with their
sha256, the command that made them and the library versions, so a shipped model can be reproduced.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "QMedSAMSlicer" / "Resources" / "Models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def invoked_command() -> str:
    """The command line that is running, relative to the repo (never a path of this machine)."""
    args = [Path(a).resolve().relative_to(REPO_ROOT).as_posix() if Path(a).is_absolute() and
            Path(a).resolve().is_relative_to(REPO_ROOT) else a for a in sys.argv[1:]]
    module = Path(sys.argv[0]).resolve()
    if module.is_relative_to(REPO_ROOT):
        name = module.relative_to(REPO_ROOT).with_suffix("").as_posix().replace("/", ".")
        return shlex.join(["python", "-m", name, *args])
    return shlex.join([Path(sys.argv[0]).name, *args])


def library_versions(*names: str) -> dict:
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def record_model(entry: dict, models_dir: Path = MODELS_DIR) -> dict:
    """Add or replace `entry` (by name) in the catalogue, filling in the sha256 of its files."""
    folder = models_dir / entry["folder"]
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".xml", ".bin"))
    entry = dict(entry, sha256={name: sha256_file(folder / name) for name in files})
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
