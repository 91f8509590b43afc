"""Collect the three stages' logs, cases and checkpoints' best epochs into docs/measurements/qat-paper/."""
import json
import shutil
import sys
from pathlib import Path

import torch

from training.qat.config import learning_rate, load_stage_config

# python docs/measurements/qat-paper/summarize.py runs/qat-paper-smoke [docs/measurements/qat-paper]
run = Path(sys.argv[1])
out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/measurements/qat-paper")
out.mkdir(parents=True, exist_ok=True)
summary = {"run": str(run), "machine": "2 shared CPU cores (x86-64), world size 1, torch threads 2",
           "scale": {"samples_per_modality": 1, "modalities": 9, "warmup_epochs": 1, "cosine_epochs": 1,
                     "epochs_per_stage": 1, "lr": 0.01, "val_samples": 9, "calibration_samples": 4},
           "stages": {}}
for n in (1, 2, 3):
    folder = run / f"stage{n}"
    if not (folder / "log.jsonl").exists():
        continue
    log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    shutil.copy(folder / "log.jsonl", out / f"stage{n}.log.jsonl")
    cases = json.loads((folder / "cases.json").read_text())
    best = torch.load(folder / "last.pt", map_location="cpu", weights_only=True)["best"]
    start = log[0]
    chosen = next(r for r in log if r["epoch"] == best["epoch"])
    summary["stages"][str(n)] = {
        "train_cases": len(cases["train"]), "validation_cases": len(cases["validation"]), "split": cases["split"],
        "start_epoch_minus_1": {k: start[k] for k in ("val_dice", "val_embedding_mse", "val_embedding_rel_l2")
                                if k in start},
        "best_epoch": best["epoch"],
        "best": {k: chosen[k] for k in ("val_dice", "val_embedding_mse", "val_embedding_rel_l2") if k in chosen},
        "epochs": log}
    if n == 1:
        (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
config = load_stage_config(Path("training/configs/qat-paper-stage1.yaml"))
summary["full_scale_lr_per_epoch"] = [learning_rate(config, e) for e in range(config.epochs)]
summary["authors_script_lr_per_epoch"] = [1e-4, 2.08e-3, 4.06e-3, 6.04e-3, 8.02e-3, 1e-2, 9.76e-3, 9.05e-3, 7.94e-3,
                                          6.55e-3, 5e-3, 3.46e-3, 2.07e-3, 9.64e-4, 2.54e-4, 1e-5]
if (out / "summary.json").exists():  # keep what the diagnosis scripts added
    summary = dict(json.loads((out / "summary.json").read_text()), **summary)
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps({n: {k: v for k, v in s.items() if k != "epochs"} for n, s in summary["stages"].items()}, indent=1))
