"""Which shipped model to use: the catalogue's default, a model the user picked while it is still there.

INT8 ships as the default by being marked default in models.json (`--default` of its exporter) once it meets
the project's bar (accuracy within 1 DSC point of FP32, not slower, a third of the size). The catalogue also
holds baselines and experiments (e.g. NNCF's INT8); being INT8 alone must not make one of them what a
clinician gets without asking."""

from __future__ import annotations


def default_model_name(entries) -> str | None:
    """Name of the model to use when the user has not chosen one (None: empty catalogue)."""
    chosen = ([e for e in entries if e.default] or list(entries) or [None])[0]
    return None if chosen is None else chosen.name


def resolve_model_name(entries, saved_choice: str | None) -> str | None:
    names = [e.name for e in entries]
    return saved_choice if saved_choice in names else default_model_name(entries)


def model_label(entry) -> str:
    """Combo-box text, e.g. 'litemedsam-int8 (INT8, calibration: qat)'."""
    calibration = "" if entry.calibration in ("", "none") else f", calibration: {entry.calibration}"
    return f"{entry.name} ({entry.precision.upper()}{calibration})"
