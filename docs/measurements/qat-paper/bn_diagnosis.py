"""Stage 1's embedding error split into BatchNorm running statistics vs trained weights (validation images)."""
import json
import sys

import torch

from training.datasets.calibration_set import spread
from training.datasets.cases import BoxPromptDataset, discover, split_cases
from training.litemedsam import load_litemedsam
from training.qat.checkpoint import model_from_checkpoint

torch.set_num_threads(1)
run = sys.argv[1]
files = [f for f in discover(["../pool"]) if f.case in split_cases("training/configs/split.yaml", "validation")]
val = BoxPromptDataset(files, augment=False, seed=0)
images = [val[i]["image"][None] for i in spread(len(val), 9)]
start, _ = model_from_checkpoint(f"{run}/stage1/best.pt")  # epoch -1: calibrated, untrained
trained, _ = model_from_checkpoint(f"{run}/stage1/last.pt")  # epoch 0
bn_keys = [k for k in start.state_dict() if k.startswith("image_encoder.") and
           any(k.endswith(s) for s in ("running_mean", "running_var", "num_batches_tracked"))]
ref = load_litemedsam().eval()
with torch.no_grad():
    floats = [ref.embed(x) for x in images]


def rel(model):
    with torch.no_grad():
        return sum(float((model.embed(x) - f).norm() / f.norm()) for x, f in zip(images, floats)) / len(images)


out = {}
mixed = trained.state_dict()
mixed.update({k: start.state_dict()[k] for k in bn_keys})
trained.load_state_dict(mixed)
out["trained_weights_start_bn_stats"] = rel(trained)
mixed = start.state_dict()
mixed.update({k: model_from_checkpoint(f"{run}/stage1/last.pt")[0].state_dict()[k] for k in bn_keys})
start.load_state_dict(mixed)
out["start_weights_trained_bn_stats"] = rel(start)
print(json.dumps(out))
