"""Writes model folders and their entries into QMedSAMSlicer/Resources/Models/models.json.

The engine only reads the catalogue (qmedsam.catalogue); every exporter records its files here with their
sha256 and size, the command that made them, the library versions and where the files are published
(qmedsam.model_store fetches them from there), so a model can be reproduced or downloaded. Only the default
model's files are kept in git; the others are build products (.gitignore).

Every entry also says which labelled cases the model saw, and for what (`cases_seen`, written by `cases_seen`
below): calibration (its pixels set quantization ranges), training (its gradients changed weights) and
selection (its scores chose the epoch, checkpoint or variant exported under this name), with the split file
they came from; Testing/test_cases_seen.py fails when a catalogued model saw a test case of the split, unless
its entry says why it is `experimental`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

from qmedsam.model_store import DEFAULT_MODELS_URL

from training.provenance import REPO_ROOT, sha256_file

MODELS_DIR = REPO_ROOT / "QMedSAMSlicer" / "Resources" / "Models"


SEEN_ROLES = ("calibration", "training", "selection")


def repo_relative(path: Path | str) -> str:
    """A path as config files write it: relative to the repository root (../ for a sibling folder)."""
    resolved = (REPO_ROOT / path).resolve()
    if resolved.is_relative_to(REPO_ROOT):
        return resolved.relative_to(REPO_ROOT).as_posix()
    if resolved.is_relative_to(REPO_ROOT.parent):
        return f"../{resolved.relative_to(REPO_ROOT.parent).as_posix()}"
    return resolved.name  # never a path of this machine


def cases_seen(split: Optional[Path | str | dict], calibration: Iterable[str] = (), training: Iterable[str] = (),
               selection: Iterable[str] = (), note: Optional[str] = None) -> dict:
    """The `cases_seen` field of a catalogue entry: case names per role and the split file they were drawn from
    (None when no split file chose them). `note`: what the lists cannot say (e.g. a choice made by hand)."""
    if isinstance(split, dict):  # training.datasets.cases.split_record: {"file": ..., "part": ...}
        split = split.get("file")
    seen = {"split": None if split is None else repo_relative(split)}
    seen.update({role: sorted(set(names)) for role, names in
                 zip(SEEN_ROLES, (calibration, training, selection))})
    if note:
        seen["note"] = note
    return seen


def cases_seen_of(entry: dict) -> dict:
    """cases_seen as the entry gives it, or read from the provenance exporters already record: the calibration
    cases (`calibration_data.cases`, a list or a per-case table) and a QAT run's training and validation cases
    (`qat.train_cases`, `qat.val_cases`: the validation cases chose the epoch); the split from `split`,
    `calibration_data.split` or the QAT config's `split`."""
    if "cases_seen" in entry:
        return entry["cases_seen"]
    calibration = entry.get("calibration_data") or {}
    qat = entry.get("qat") or {}
    split = (entry.get("split") or calibration.get("split") or qat.get("split")
             or (qat.get("config") or {}).get("split"))
    return cases_seen(split, calibration=list(calibration.get("cases") or ()), training=qat.get("train_cases", ()),
                      selection=qat.get("val_cases", ()))


def check_cases_seen(entry: dict) -> None:
    """An entry's cases_seen has the split and a sorted list of names for every role (ValueError otherwise)."""
    seen = entry.get("cases_seen")
    if not isinstance(seen, dict) or "split" not in seen:
        raise ValueError(f"catalogue entry {entry.get('name')!r} has no cases_seen; exporters write it with "
                         "training.catalogue_writer.cases_seen(split, calibration=..., training=..., selection=...)")
    for role in SEEN_ROLES:
        names = seen.get(role)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"catalogue entry {entry['name']!r}: cases_seen[{role!r}] must be a list of case names")


def seen_test_cases(entry: dict, test_cases: Iterable[str]) -> list[str]:
    """The test cases an entry's model saw for any role (calibration, training or selection), sorted."""
    seen = cases_seen_of(entry)
    return sorted(set(test_cases) & {name for role in SEEN_ROLES for name in seen[role]})


def published_at(name: str) -> str:
    """The release the model's files are uploaded to: one GitHub release per model, tagged with its name."""
    return f"{DEFAULT_MODELS_URL}/{name}/"


def record_model(entry: dict, models_dir: Path = MODELS_DIR) -> dict:
    """Add or replace `entry` (by name) in the catalogue, filling in the sha256, size and release of its files."""
    entry = dict(entry, cases_seen=cases_seen_of(entry))
    check_cases_seen(entry)
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


def _edit_catalogue(name: str, edit, models_dir: Path) -> None:
    """Apply `edit(record, is_named)` to every record of the catalogue, which must hold a model `name`."""
    catalogue_path = models_dir / "models.json"
    catalogue = json.loads(catalogue_path.read_text())
    names = [m["name"] for m in catalogue["models"]]
    if name not in names:
        raise SystemExit(f"no model {name!r} in {catalogue_path.name}; models: {', '.join(names)}")
    for model in catalogue["models"]:
        edit(model, model["name"] == name)
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")


def set_default(name: str, models_dir: Path = MODELS_DIR) -> None:
    """Mark `name` as the catalogue's default (the model the engine and the Slicer effect use unasked)."""
    _edit_catalogue(name, lambda model, named: model.__setitem__("default", named), models_dir)


def set_field(name: str, field: str, value, models_dir: Path = MODELS_DIR) -> None:
    """Record a measured fact about model `name` (e.g. `verified_isas`) in its catalogue entry."""
    _edit_catalogue(name, lambda model, named: named and model.__setitem__(field, value), models_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Mark a catalogue model as the default.")
    parser.add_argument("--set-default", required=True, metavar="NAME")
    set_default(parser.parse_args().set_default)
