"""One-off: give the catalogue entries written before `cases_seen` existed that field, truthfully.

    python -m training.backfill_cases_seen

What an entry's own provenance says is read by the one rule, training.catalogue_writer.cases_seen_of
(calibration cases, a QAT run's training and validation cases). What no field recorded is written here, for
the exact builds it is true of (keyed by the sha256 of encoder.bin, so a rebuilt model is never mislabelled):
the choices made by comparing models on the 16 ../shared/data cases, which the split now puts in test. A
build that saw test cases is marked `experimental` with the reason. Entries that already have cases_seen
(every model exported since) are left as they are.
"""

from __future__ import annotations

import json

from qmedsam.npz_io import npz_files_in

from training.catalogue_writer import MODELS_DIR, cases_seen, cases_seen_of, check_cases_seen
from training.datasets.cases import DEFAULT_DATA

SHARED_CASES = [path.stem for path in npz_files_in(DEFAULT_DATA / "imgs")]  # all 16 in the split's test list
BEFORE_THE_SPLIT = "made before training/configs/split.yaml existed; "

# (name, sha256 of encoder.bin) -> what the entry's fields do not say.
HISTORY = {
    ("litemedsam-fp32", "e8f09b6f2825a7cce935a9bd236a7e4a3d3d48f77f048c8850e9781026a7efc1"): {
        "note": "exported from the published LiteMedSAM checkpoint without data; which images the MedSAM authors "
                "trained that checkpoint on is not recorded here"},
    ("litemedsam-int8-ptq", "91504e85246c94cbe2202cc8cd5829370e4a74282c34dbebd012f0f7e90d68e8"): {
        "selection": SHARED_CASES,
        "note": BEFORE_THE_SPLIT + "calibrated on 11 ../shared/data cases; made the default over litemedsam-int8-qat "
                "by mean DSC and agreement on all 16 (docs/quantization.md)",
        "experimental": "calibrated and chosen on ../shared/data cases, now test cases; replaced by a calibration "
                        "on the split's train list"},
    ("litemedsam-int8-qat", "68732a9a88781af550a4bbb2197fcb5c0deb52afbc4e605a48c9743c4ae1b405"): {
        "note": BEFORE_THE_SPLIT + "trained on 11 ../shared/data cases; the other 5 chose each stage's epoch and "
                "the learning rate",
        "experimental": "trained and selected on ../shared/data cases, now test cases; to be retrained on the split"},
    ("litemedsam-int8-dfq", "f08c3c8e5f4e858ae0da343cda11c68622cba6eabe674a3d57ade07001ebd66c"): {
        "selection": SHARED_CASES,
        "note": BEFORE_THE_SPLIT + "calibrated on 8 DFQ-SAM synthetic images (no real image); its configuration "
                "(8 bits, scale reparameterization, no log-sqrt2) was chosen over the other data-free variants by "
                "agreement with FP32 on the 16 ../shared/data cases (docs/dfq-sam.md)",
        "experimental": "its variant was chosen on ../shared/data cases, now test cases; to be re-chosen on the "
                        "split's validation list"},
    ("litemedsam-nncf-int8", "e88b352a927844114192e47a37e0f2b16b15f2d0c9c68fb3efe460100ebb6c06"): {
        "note": BEFORE_THE_SPLIT + "calibrated on all 16 ../shared/data cases",
        "experimental": "calibrated on ../shared/data cases, now test cases; recalibrate with "
                        "python -m training.quantization.nncf_ptq (the split's train list)"},
}


def backfill(entry: dict) -> dict:
    """The entry with cases_seen (and `experimental` where it saw test cases), from its fields and HISTORY."""
    if "cases_seen" in entry:
        return entry
    known = HISTORY.get((entry["name"], entry["sha256"].get("encoder.bin")), {})
    seen = cases_seen_of(entry)
    seen = cases_seen(seen["split"], seen["calibration"], seen["training"],
                      known.get("selection", seen["selection"]), known.get("note"))
    entry = dict(entry, cases_seen=seen)
    if "experimental" in known:
        entry["experimental"] = known["experimental"]
    check_cases_seen(entry)
    return entry


def main() -> None:
    path = MODELS_DIR / "models.json"
    catalogue = json.loads(path.read_text())
    catalogue["models"] = [backfill(entry) for entry in catalogue["models"]]
    path.write_text(json.dumps(catalogue, indent=2) + "\n")
    for entry in catalogue["models"]:
        seen = entry["cases_seen"]
        print(f"{entry['name']}: " + ", ".join(f"{role} {len(seen[role])}" for role in
                                               ("calibration", "training", "selection"))
              + (f"; experimental: {entry['experimental']}" if "experimental" in entry else ""))


if __name__ == "__main__":
    main()
