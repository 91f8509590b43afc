"""Per-epoch validation of the CPU-scale QAT runs (training/configs/qat-*-cpu.yaml) into one JSON per configuration.

    python docs/measurements/qat-cpu/collect.py ours    # runs/qat-cpu/ours/stage{1,2,3} -> ours.json here
    python docs/measurements/qat-cpu/collect.py paper   # runs/qat-cpu/paper/stage{1,2,3} -> paper.json
    python docs/measurements/qat-cpu/collect.py float   # the float LiteMedSAM, same validation slices -> float.json

Each stage: its config file, the command, the kept epoch, and every logged epoch (epoch -1 = the calibrated,
untrained PTQ start) with validation Dice, embedding MSE and relative L2 error against the float model, the
training losses and the epoch's seconds; `wall_seconds` is the stage's wall time from runs/qat-cpu/chain.out
(ours' first run, on recipe-int8.yaml: its JSON is ours-recipe-int8.json), chain-v4.out (ours on the default
recipe with PTQ's calibration draw, 2026-11-28) or paper-chain.out (the paper's); the latest line of a stage wins.
"""
import json
import re
import sys
from pathlib import Path

import torch

from training.qat.checkpoint import load_checkpoint
from training.qat.config import load_stage_config
from training.qat.train import checkpoint_seen

OUT = Path("docs/measurements/qat-cpu")
CONFIGS = {"ours": "training/configs/qat-stage{}-cpu.yaml", "paper": "training/configs/qat-paper-stage{}-cpu.yaml"}
MACHINES = {  # where each configuration's runs were made
    "ours": "2 x86-64 CPU cores (AMD EPYC), torch threads 2, world size 1; stage 1 was paused (SIGSTOP) for about "
            "25 min while the DFQ-SAM synthesis ran, which its wall_seconds include",
    "paper": "2 x86-64 CPU cores (AMD EPYC) shared with 1 evaluation job at a time, torch threads 2, world size 1"}


def wall_seconds(kind: str) -> dict:
    chains = [Path("runs/qat-cpu") / name for name in ("chain.out", "chain-v4.out", "paper-chain.out")]
    text = "".join(chain.read_text() for chain in chains if chain.exists())
    return {int(n): int(s) for n, s in re.findall(rf"^{kind} stage (\d): (\d+) s wall", text, re.M)}


def collect(kind: str) -> dict:
    walls, stages = wall_seconds(kind), {}
    for n in (1, 2, 3):
        config_path = CONFIGS[kind].format(n)
        config = load_stage_config(Path(config_path))
        folder = Path(config.output_dir)
        if not (folder / "log.jsonl").exists():
            continue
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        last = load_checkpoint(folder / "last.pt")
        finished = last["epoch"] + 1 >= config.epochs
        cases = json.loads((folder / "cases.json").read_text())
        stages[str(n)] = {"config": config_path, "command": last["command"], "finished": finished,
                          "wall_seconds": walls.get(n), "best_epoch": last["best"]["epoch"],
                          "train_cases": len(cases["train"]), "validation_cases": len(cases["validation"]),
                          "cases_seen_by_kept_checkpoint": checkpoint_seen(load_checkpoint(folder / "best.pt")),
                          "epochs": log}
    scale = load_stage_config(Path(CONFIGS[kind].format(1)))
    return {"configuration": kind, "machine": MACHINES[kind],
            "scale": {k: getattr(scale, k) for k in ("samples_per_modality", "warmup_epochs", "cosine_epochs",
                                                     "val_samples", "calibration_samples",
                                                     "calibration_per_modality", "lr", "threads")},
            "split": scale.split, "stages": stages}


def float_reference() -> dict:
    """The float model through the trainer's own validate(), on the same validation slices as the runs."""
    from training.datasets.calibration_set import spread
    from training.litemedsam import load_litemedsam
    from training.qat.train import StudentStep, _datasets, validate

    torch.set_num_threads(2)
    config = load_stage_config(Path(CONFIGS["ours"].format(1)))
    _, val, _, _ = _datasets(config)
    model = load_litemedsam().eval()
    return {"model": "litemedsam-fp32", "split": config.split,
            **validate(StudentStep(model, ["mask_decoder"]), model, val, spread(len(val), config.val_samples), 0, 1)}


if __name__ == "__main__":
    kind = sys.argv[1]
    result = float_reference() if kind == "float" else collect(kind)
    (OUT / f"{kind}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result if kind == "float" else
                     {n: {k: v for k, v in s.items() if k not in ("epochs", "command")} for n, s in
                      result["stages"].items()}, indent=1))
