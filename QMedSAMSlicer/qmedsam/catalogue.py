"""The model catalogue (Resources/Models/models.json) and checksum-verified model files.

`training/` writes the catalogue; the engine only reads it. A model file is used only after its sha256
matches the catalogue, and the bytes that were hashed are the bytes handed to OpenVINO, so a file cannot
change between the check and the load.

Only the default model ships inside the extension; the others are fetched or imported (model_store) into a
per-user folder, because an installed extension's own folder may be read-only. A model's files are looked
for in the catalogue's folder first, then in the user folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import QMedSAMError

CATALOGUE_FILE = "models.json"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"


def models_dir() -> Path:
    """Where the catalogue lives: $QMEDSAM_MODELS_DIR, else the Resources/Models folder shipped beside us."""
    return Path(os.environ.get("QMEDSAM_MODELS_DIR", DEFAULT_MODELS_DIR))


def user_models_dir() -> Path:
    """Where fetched and imported models go: $QMEDSAM_USER_MODELS_DIR, else the platform's per-user data folder."""
    if os.environ.get("QMEDSAM_USER_MODELS_DIR"):
        return Path(os.environ["QMEDSAM_USER_MODELS_DIR"])
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "QMedSAM" / "models"


def _has_files(folder: Path, names, sizes: dict) -> bool:
    """Cheap presence test: every file exists, with its catalogue size if known (sha256 is checked on load)."""
    try:
        return all((folder / name).is_file() and (name not in sizes or (folder / name).stat().st_size == sizes[name])
                   for name in names)
    except OSError:
        return False


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

    @property
    def sizes(self) -> dict:
        """Bytes per file; catalogues written before sizes were recorded give none."""
        return self.record.get("size") or {}

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())

    @property
    def present(self) -> bool:
        """All files are in self.folder (with their recorded sizes, when the catalogue has them)."""
        return _has_files(self.folder, self.sha256, self.sizes)

    def read_verified(self, file_name: str) -> bytes:
        """The file's bytes, after checking them against the recorded sha256."""
        path = self.folder / file_name
        expected = self.sha256.get(file_name)
        if expected is None:
            raise QMedSAMError(f"Model '{self.name}': {file_name} has no sha256 in {CATALOGUE_FILE}; "
                               "re-export the model so that the catalogue records it.")
        if not path.exists():
            raise QMedSAMError(f"Model '{self.name}' is not on this computer ({file_name} missing). Download it "
                               f"with `qmedsam models --fetch {self.name}` (or Download... in the QMedSAM module), "
                               "import it with `qmedsam models --import-from FOLDER_OR_ZIP`, or build it with "
                               f"`{self.record.get('command', 'its training command')}`.")
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


def _read_catalogue(folder: Path) -> dict:
    """models.json as a dict with at least a `models` list."""
    path = folder / CATALOGUE_FILE
    try:
        catalogue = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(catalogue.get("models"), list):
            raise KeyError("no 'models' list")
        return catalogue
    except FileNotFoundError:
        raise QMedSAMError(f"No model catalogue at {path}. Export a model first "
                           "(python -m training.quantization.export_openvino) or set QMEDSAM_MODELS_DIR.") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise QMedSAMError(f"The model catalogue {path} is not valid ({error}); restore it from git.") from None


def load_catalogue(folder: Path | None = None) -> list[ModelEntry]:
    folder = Path(folder) if folder is not None else models_dir()
    records = _read_catalogue(folder)["models"]
    try:
        return [ModelEntry(name=r["name"], precision=r["precision"], calibration=r["calibration"],
                           folder=_locate(r, folder), encoder=r["encoder"], decoder=r["decoder"],
                           sha256=r["sha256"], default=bool(r.get("default", False)),
                           description=r.get("description", ""), record=r) for r in records]
    except (KeyError, TypeError, AttributeError) as error:
        raise QMedSAMError(f"The model catalogue {folder / CATALOGUE_FILE} has a malformed model record "
                           f"({type(error).__name__}: {error}); restore it from git.") from None


@dataclass(frozen=True)
class ClickDecoderEntry:
    """A click decoder (boxes + positive/negative points; training/clicks/export_decoder.py), models.json's
    `click_decoders` list. Every LiteMedSAM model shares the frozen image encoder, so any model's embedding fits it.
    """

    name: str
    folder: Path
    decoder: str
    sha256: dict
    record: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_clicks_trained(self) -> int:
        return int(self.record.get("max_clicks_trained", 5))

    sizes = ModelEntry.sizes  # the same record fields and sha256 check as a model's
    read_verified = ModelEntry.read_verified
    model_pair = ModelEntry.model_pair


def load_click_decoders(folder: Path | None = None) -> list[ClickDecoderEntry]:
    folder = Path(folder) if folder is not None else models_dir()
    return [ClickDecoderEntry(name=r["name"], folder=_locate(r, folder), decoder=r["decoder"], sha256=r["sha256"],
                              record=r) for r in _read_catalogue(folder).get("click_decoders", [])]


def find_click_decoder(folder: Path | None = None) -> ClickDecoderEntry:
    """The catalogue's click decoder (the first one listed); the shipped catalogue's when `folder` has none."""
    entries = load_click_decoders(folder)
    if not entries and folder is not None:
        entries = load_click_decoders(None)
    if not entries:
        raise QMedSAMError("The model catalogue has no click decoder, so clicks cannot be used; segment with boxes "
                           "only, or export one (python -m training.clicks.export_decoder).")
    return entries[0]


def _locate(record: dict, folder: Path) -> Path:
    """The catalogue's own folder when it holds the model, else the user folder (where a fetch puts it)."""
    shipped = folder / record["folder"]
    if _has_files(shipped, record["sha256"], record.get("size") or {}):
        return shipped
    return user_models_dir() / record["folder"]


def default_entry(entries):
    """The entry marked default, else the first one; None for an empty catalogue."""
    return next((e for e in entries if e.default), next(iter(entries), None))


def find_model(name: str | None = None, folder: Path | None = None) -> ModelEntry:
    """The named model, or the catalogue's default when name is None."""
    entries = load_catalogue(folder)
    if name is None:
        chosen = default_entry(entries)
        if chosen is None:
            raise QMedSAMError("The model catalogue is empty. Export a model first.")
        return chosen
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise QMedSAMError(f"Unknown model '{name}'. Known models: {known} (see `qmedsam models`).")
