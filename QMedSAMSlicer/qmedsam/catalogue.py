"""The model catalogue (Resources/Models/models.json) and checksum-verified model files.

`training/` writes the catalogue; the engine only reads it. A model file is used only after its sha256
matches the catalogue, and the bytes that were hashed are the bytes handed to OpenVINO, so a file cannot
change between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import QMedSAMError

CATALOGUE_FILE = "models.json"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"


def models_dir() -> Path:
    """Where the catalogue lives: $QMEDSAM_MODELS_DIR, else the Resources/Models folder shipped beside us."""
    return Path(os.environ.get("QMEDSAM_MODELS_DIR", DEFAULT_MODELS_DIR))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    precision: str
    calibration: str
    folder: Path
    encoder: str
    decoder: str
    sha256: dict
    default: bool = False
    description: str = ""
    record: dict = field(default_factory=dict, compare=False, repr=False)

    def read_verified(self, file_name: str) -> bytes:
        """The file's bytes, after checking them against the recorded sha256."""
        path = self.folder / file_name
        expected = self.sha256.get(file_name)
        if expected is None:
            raise QMedSAMError(f"Model '{self.name}': {file_name} has no sha256 in {CATALOGUE_FILE}; "
                               "re-export the model so that the catalogue records it.")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise QMedSAMError(f"Model '{self.name}': cannot read {path} ({error.strerror}). "
                               "Reinstall the extension or re-export the model.") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise QMedSAMError(f"Model '{self.name}': {path.name} does not match its recorded sha256 "
                               f"(expected {expected[:12]}…, found {actual[:12]}…); the file is damaged or "
                               "was replaced. Reinstall the extension or re-export the model.")
        return data

    def model_pair(self, part: str) -> tuple[bytes, bytes]:
        """Verified (xml, bin) bytes of the 'encoder' or 'decoder'."""
        xml_name = getattr(self, part)
        bin_name = xml_name[: -len(".xml")] + ".bin"
        return self.read_verified(xml_name), self.read_verified(bin_name)


def load_catalogue(folder: Path | None = None) -> list[ModelEntry]:
    folder = Path(folder) if folder is not None else models_dir()
    path = folder / CATALOGUE_FILE
    try:
        records = json.loads(path.read_text(encoding="utf-8"))["models"]
    except FileNotFoundError:
        raise QMedSAMError(f"No model catalogue at {path}. Export a model first "
                           "(python -m training.export_openvino) or set QMEDSAM_MODELS_DIR.") from None
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise QMedSAMError(f"The model catalogue {path} is not valid ({error}); restore it from git.") from None
    return [ModelEntry(name=r["name"], precision=r["precision"], calibration=r["calibration"],
                       folder=folder / r["folder"], encoder=r["encoder"], decoder=r["decoder"],
                       sha256=r["sha256"], default=bool(r.get("default", False)),
                       description=r.get("description", ""), record=r) for r in records]


def find_model(name: str | None = None, folder: Path | None = None) -> ModelEntry:
    """The named model, or the catalogue's default when name is None."""
    entries = load_catalogue(folder)
    if name is None:
        defaults = [e for e in entries if e.default] or entries[:1]
        if not defaults:
            raise QMedSAMError("The model catalogue is empty. Export a model first.")
        return defaults[0]
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise QMedSAMError(f"Unknown model '{name}'. Known models: {known} (see `qmedsam models`).")
