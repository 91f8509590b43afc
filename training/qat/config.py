"""One QAT stage as a YAML file (training/configs/qat-stage{1,2,3}.yaml) and the paper's learning-rate schedule.

Paths in a config are relative to the repository root. Any field can be overridden on the command line
with `--set field=value` (the value is read as YAML), e.g. `--set samples_per_modality=1`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional, Union

import yaml

from training.datasets.cases import DEFAULT_DATA_IN_REPO
from training.litemedsam.losses import DICE_FORMS, DISTILL_WEIGHTS
from training.provenance import REPO_ROOT
from training.quantization.quantize import QUANTIZABLE_PARTS

LOSS_TERMS = ("dice", "bce", "focal", "iou", "distill")


@dataclass(frozen=True)
class StageConfig:
    stage: int
    recipe: str  # quantization recipe YAML (training/configs/recipe-*.yaml)
    quantized_parts: tuple
    trainable_parts: tuple
    output_dir: str
    init_checkpoint: Optional[str] = None  # the previous stage's best.pt
    data: tuple = (DEFAULT_DATA_IN_REPO,)
    cases: Optional[tuple] = None  # keep only these case names (None: all)
    # A split file (training/configs/split.yaml): its train cases train, its validation cases select the epoch,
    # its test cases are never read. None: a val_fraction of the cases, drawn per modality, validates.
    split: Optional[str] = None
    val_fraction: float = 0.2
    samples_per_modality: Union[str, int] = "min"  # "min", "tenth" or a number (the paper: 900)
    batch_size: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    grad_clip: Optional[float] = 1.0  # max global gradient norm (not in the paper: see training/qat/train.py)
    warmup_epochs: int = 5
    cosine_epochs: int = 10
    loss: dict = field(default_factory=lambda: {"dice": 1.0, "bce": 1.0})
    dice_form: str = "plain"  # "squared": the authors' MONAI DiceLoss(squared_pred=True)
    distill_weight: str = "predicted_iou"  # "true_iou": the paper's weight (teacher mask vs ground truth)
    train_mode: bool = False  # True: the student trains in train mode (BatchNorm batch statistics), as the authors
    max_jitter: int = 10
    val_samples: int = 16
    calibration_samples: int = 16
    # PTQ's calibration set instead (training.quantization.ptq --per-modality N --seed `seed`): N train cases per
    # modality drawn by draw_cases, each with all its boxes, so a QAT run starts from the PTQ model it is compared
    # with. None: `calibration_samples` training slices spread evenly.
    calibration_per_modality: Optional[int] = None
    seed: int = 0
    threads: Optional[int] = None  # torch threads per process (default: cores / processes)

    def __post_init__(self) -> None:
        for name in ("quantized_parts", "trainable_parts", "data"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.cases is not None:
            object.__setattr__(self, "cases", tuple(self.cases))
        bad = set(self.quantized_parts) - set(QUANTIZABLE_PARTS)
        if bad:
            raise ValueError(f"quantized_parts must be among {QUANTIZABLE_PARTS}, got {sorted(bad)}")
        bad = set(self.trainable_parts) - set(QUANTIZABLE_PARTS)
        if bad or not self.trainable_parts:
            raise ValueError(f"trainable_parts must be a non-empty subset of {QUANTIZABLE_PARTS}")
        unknown = set(self.loss) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; use {LOSS_TERMS}")
        if self.dice_form not in DICE_FORMS:
            raise ValueError(f"dice_form must be one of {DICE_FORMS}, got {self.dice_form!r}")
        if self.distill_weight not in DISTILL_WEIGHTS:
            raise ValueError(f"distill_weight must be one of {DISTILL_WEIGHTS}, got {self.distill_weight!r}")
        if self.calibration_per_modality is not None and self.calibration_per_modality < 1:
            raise ValueError(f"calibration_per_modality must be a positive number of cases or null, "
                             f"got {self.calibration_per_modality}")
        if self.warmup_epochs < 0 or self.cosine_epochs < 1:
            raise ValueError("warmup_epochs must be >= 0 and cosine_epochs >= 1")

    @property
    def epochs(self) -> int:
        """The warm-up's last epoch is the cosine's first: 5 + 10 gives the paper's 14 epochs (Table 3)."""
        return max(self.warmup_epochs, 1) + self.cosine_epochs - 1

    def loss_weight(self, term: str) -> float:
        return float(self.loss.get(term, 0.0))

    def path(self, value: str) -> Path:
        return (REPO_ROOT / value).resolve()

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def load_stage_config(path: Path, overrides: Optional[list] = None) -> StageConfig:
    with open(path, encoding="utf-8") as stream:
        values = yaml.safe_load(stream) or {}
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects field=value, got {item!r}")
        values[key.strip()] = yaml.safe_load(text)
    known = {f.name for f in fields(StageConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return StageConfig(**values)


def learning_rate(config: StageConfig, epoch: int) -> float:
    """Linear warm-up from 1 % of lr, then a cosine down to 0.1 % with half-period cosine_epochs - 1 (QMedSAM §3.3)."""
    warmup = max(config.warmup_epochs, 1)
    if epoch < warmup - 1:
        return config.lr * (0.01 + 0.99 * epoch / (warmup - 1))
    step = epoch - (warmup - 1)
    lowest = 0.001 * config.lr
    if config.cosine_epochs == 1:
        return config.lr
    return lowest + (config.lr - lowest) * (1 + math.cos(math.pi * min(step, config.cosine_epochs - 1)
                                                          / (config.cosine_epochs - 1))) / 2
