"""The float LiteMedSAM's validation Dice on the trainer's 9 validation images (same indices, same metric)."""
import json

import torch

from training.datasets.calibration_set import spread
from training.datasets.cases import BoxPromptDataset, discover, split_cases
from training.litemedsam import load_litemedsam
from training.qat.train import StudentStep, validate

torch.set_num_threads(1)
files = [f for f in discover(["../pool"]) if f.case in split_cases("training/configs/split.yaml", "validation")]
val = BoxPromptDataset(files, augment=False, seed=0)
model = load_litemedsam().eval()
print(json.dumps(validate(StudentStep(model, ["mask_decoder"]), model, val, spread(len(val), 9), 0, 1)))
