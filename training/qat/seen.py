"""Which labelled cases a QAT model saw, and for what, over its whole chain of stages (catalogue `cases_seen`).

calibration: the cases of the images that set a newly quantized part's activation scales; training: the cases
the balanced sampler drew in the epochs that trained the checkpoint (epoch 0 up to the one kept); selection: the
validation cases whose Dice chose the kept epoch. A stage adds its own to what its init checkpoint saw, and every
checkpoint carries the total, so the exported stage-3 model names the cases of stages 1 and 2 too.
"""

from __future__ import annotations

from training.catalogue_writer import SEEN_ROLES
from training.datasets.calibration_set import spread
from training.datasets.cases import BoxPromptDataset, ModalityBalancedSampler, SliceIndex


def case_of(dataset: BoxPromptDataset, index) -> str:
    return dataset.files[dataset.index.locate(int(index))[0]].case


def merge(*seen: dict) -> dict:
    """The union, role by role, of cases_seen dicts (role -> case names), as sorted lists."""
    return {role: sorted({name for part in seen for name in part.get(role, ())}) for role in SEEN_ROLES}


def calibration_seen(train: BoxPromptDataset, count: int) -> dict:
    """The cases behind train.qat's calibration batches (the same `spread` of the training samples)."""
    return merge({"calibration": [case_of(train, i) for i in spread(len(train), count)]})


def stage_seen(train: BoxPromptDataset, samples_per_modality, seed: int, last_epoch: int,
               val: BoxPromptDataset, val_indices) -> dict:
    """Training draws of epochs 0..last_epoch (none for epoch -1, the untrained start) and the selection cases."""
    sampler = ModalityBalancedSampler(SliceIndex(train.files), samples_per_modality, seed, num_replicas=1, rank=0)
    drawn = []
    for epoch in range(last_epoch + 1):
        sampler.set_epoch(epoch)
        drawn += [case_of(train, i) for i in sampler.epoch_draw()]
    return merge({"training": drawn, "selection": [case_of(val, i) for i in val_indices]})
