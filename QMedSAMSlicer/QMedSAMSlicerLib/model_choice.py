"""Which model to use and which ones the module panel offers: the catalogue's default, a model the user picked
while it is still there, and the few user-facing models with one line each on what they are for.

INT8 ships as the default by being marked default in models.json (`--default` of its exporter) once it meets
the project's bar (accuracy within 1 DSC point of FP32, not slower, a third of the size). The catalogue also
holds baselines and experiments (e.g. NNCF's INT8, per-stage QAT); being INT8 alone must not make one of them
what a clinician gets without asking, and they stay in the CLI (`qmedsam models`), not in the panel.
Only the default ships with the extension; the panel downloads the others after asking (model_store)."""

from __future__ import annotations

from qmedsam.catalogue import default_entry

# The user-facing models, in panel order, and what each is for (one line). The catalogue's default is
# always offered first, even if it is not listed here.
PANEL_MODELS = {
    "litemedsam-int8-ptq": "INT8: about 1.5x faster than FP32 at a third of its size; ships with the extension.",
    "litemedsam-fp32": "FP32 reference: the original float LiteMedSAM, most faithful, slower and 3x larger.",
    "litemedsam-int8-dfq": "Data-free INT8: calibrated on synthetic images only (no patient data), as fast as "
                           "the default.",
}


def default_model_name(entries) -> str | None:
    """Name of the model to use when the user has not chosen one (None: empty catalogue)."""
    chosen = default_entry(entries)
    return None if chosen is None else chosen.name


def resolve_model_name(entries, saved_choice: str | None) -> str | None:
    """The saved choice while it is in the catalogue and on this computer, else the default."""
    usable = [e.name for e in entries if getattr(e, "present", True)]
    return saved_choice if saved_choice in usable else default_model_name(entries)


def panel_models(entries) -> list:
    """The catalogue's default first, then the other user-facing models the catalogue holds."""
    default = default_model_name(entries)
    order = [default] + [name for name in PANEL_MODELS if name != default]
    by_name = {e.name: e for e in entries}
    return [by_name[name] for name in order if name in by_name]


def purpose(entry) -> str:
    return PANEL_MODELS.get(entry.name) or entry.description


def panel_label(entry) -> str:
    """Combo-box text: the model, and its download size while it is not on this computer."""
    if getattr(entry, "present", True):
        return model_label(entry)
    return f"{model_label(entry)}, not downloaded ({entry.total_bytes / 1e6:.0f} MB)"


def download_question(entry, url: str, folder) -> str:
    """What the user agrees to before anything is fetched."""
    return (f"Download the model {entry.name} ({entry.total_bytes / 1e6:.1f} MB)?\n\n"
            f"From: {url}\nInto: {folder}\n\nEvery file is checked against the sha256 recorded in the "
            "extension before it is kept. Without internet access, download the files elsewhere and use "
            "Import from file.... No image leaves this computer.")


def model_label(entry) -> str:
    """Combo-box text, e.g. 'litemedsam-int8 (INT8, calibration: qat)'."""
    calibration = "" if entry.calibration in ("", "none") else f", calibration: {entry.calibration}"
    return f"{entry.name} ({entry.precision.upper()}{calibration})"
