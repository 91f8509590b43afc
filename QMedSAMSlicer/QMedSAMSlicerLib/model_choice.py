"""Which shipped model to use: INT8 when the catalogue has one (smaller, and faster on CPUs with VNNI/AMX),
else the catalogue's default (FP32); a model the user picked wins while it is still in the catalogue."""

from __future__ import annotations


def default_model_name(entries) -> str | None:
    """Name of the model to use when the user has not chosen one (None: empty catalogue)."""
    int8 = [e for e in entries if e.precision.lower() == "int8"]
    int8_default = [e for e in int8 if e.default]
    chosen = (int8_default or int8 or [e for e in entries if e.default] or list(entries) or [None])[0]
    return None if chosen is None else chosen.name


def resolve_model_name(entries, saved_choice: str | None) -> str | None:
    names = [e.name for e in entries]
    return saved_choice if saved_choice in names else default_model_name(entries)


def model_label(entry) -> str:
    """Combo-box text, e.g. 'litemedsam-int8 (INT8, calibration: qat)'."""
    calibration = "" if entry.calibration in ("", "none") else f", calibration: {entry.calibration}"
    return f"{entry.name} ({entry.precision.upper()}{calibration})"
