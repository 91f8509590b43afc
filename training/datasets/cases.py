"""Box-prompt training samples for LiteMedSAM QAT, read online from challenge .npz files.

Nothing is decompressed to disk: every labelled 2D image or 3D slice gets a global index, a cumulative
count over files plus a binary search finds its volume, and the volume is decompressed when a batch needs
it (QMedSAM paper, shared/papers/qmedsam-qat-paper.txt §2.1; the baseline's per-slice decompression needs
~10 TB for a ~160 GB dataset). Modalities are very unbalanced (CT has ~1000x the Microscopy clips), so
ModalityBalancedSampler redraws N_s clips per modality each epoch with N_s = the smallest modality's count,
or max(N_m / 10, N_min) in the paper's ablation (§3.1 "Dataset and sampler", §4.4); the flips are the
paper's augmentation (§3.1). Box prompts are the mask's bounding box with each side moved outward by a
random 0..max_jitter pixels, as in MedSAM training.

Layouts: the challenge training tree root/<Modality>/<dataset>/*.npz (imgs and gts in one file) and the
evaluation tree root/imgs/<case>.npz + root/gts/<case>.npz (cases named <2DBox|3DBox>_<Modality>_<dataset>-<id>).
"""

from __future__ import annotations

import argparse
import math
import operator
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from qmedsam.errors import QMedSAMError
from qmedsam.npz_io import npz_files_in, read_npz_arrays
from qmedsam.preprocess import MODEL_SIZE, area_resize, to_model_input

from training.provenance import REPO_ROOT

__all__ = ["DEFAULT_DATA", "DEFAULT_DATA_IN_REPO", "SYNTHETIC_CASE_PREFIX",
           "MODEL_SIZE", "SourceFile", "discover", "split_by_case", "split_cases",
           "evaluation_cases", "add_split_arguments", "cases_from_split", "split_record", "SPLIT_FILE_IN_REPO",
           "SliceIndex", "BoxPromptDataset",
           "ModalityBalancedSampler", "collate", "nearest_resize", "flip_valid_region", "mask_bbox"]

# The labelled cases beside the repository: the default data of every training and evaluation command.
DEFAULT_DATA_IN_REPO = "../shared/data"  # relative to the repository root, as config files write paths
DEFAULT_DATA = (REPO_ROOT / DEFAULT_DATA_IN_REPO).resolve()
# Case names of DFQ-SAM synthetic images (training/dfq/synth.py writes them; PTQ recognises data-free calibration).
SYNTHETIC_CASE_PREFIX = "2DBox_Synthetic_dfq-sam-"

SAVE_HINT = "a training file holds 'imgs' and 'gts': numpy.savez_compressed(path, imgs=..., gts=...)"


@dataclass(frozen=True)
class SourceFile:
    case: str  # file stem
    modality: str  # e.g. "CT"
    dataset: str
    kind: str  # "2D" or "3D"
    image_path: Path
    label_path: Path  # same as image_path in the challenge layout
    slices: tuple  # 3D: slices whose gts hold a label; 2D: (0,)


# ---------------------------------------------------------------------------------------------- reading


def _stored_shape(path: Path, key: str) -> tuple:
    """Shape of an .npz member read from its .npy header: the array itself is not decompressed."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            return tuple(read_header(member)[0])
    except KeyError:
        raise ValueError(f"{path} lacks {key!r}; {SAVE_HINT}.") from None
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz ({error}); {SAVE_HINT}.") from None


def _load_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz through the engine's reader (never unpickled); a failure is a ValueError."""
    try:
        return read_npz_arrays(path, [key], role="Training file", needs=SAVE_HINT)[key]
    except QMedSAMError as error:
        raise ValueError(str(error)) from None


def _check_shapes(image_shape: tuple, label_shape: tuple, where: str) -> str:
    """'2D' or '3D' from gts, after checking imgs fits: (H, W[, 3]) with (H, W), or (D, H, W) with (D, H, W)."""
    if len(label_shape) == 2 and (image_shape == label_shape or image_shape == (*label_shape, 3)):
        return "2D"
    if len(label_shape) == 3 and image_shape == label_shape:
        return "3D"
    raise ValueError(f"{where}: imgs {image_shape} does not match gts {label_shape}; expected imgs (H, W, 3) or "
                     "(H, W) with gts (H, W), or imgs (D, H, W) with gts (D, H, W).")


def _labelled_slices(gts: np.ndarray, kind: str) -> tuple:
    if kind == "2D":
        return (0,) if gts.any() else ()
    return tuple(int(z) for z in np.flatnonzero(gts.reshape(gts.shape[0], -1).any(axis=1)))


def _source(case, modality, dataset, image_path, label_path, kind_hint=None):
    """A SourceFile, or None when nothing is labelled; reads gts and only the header of imgs."""
    where = str(image_path) if image_path == label_path else f"{image_path} / {label_path}"
    gts = _load_array(label_path, "gts")
    kind = _check_shapes(_stored_shape(image_path, "imgs"), gts.shape, where)
    if kind_hint is not None and kind_hint != kind:
        raise ValueError(f"{where}: the name says {kind_hint} but gts {gts.shape} is {kind}; rename the case or "
                         "fix its arrays.")
    slices = _labelled_slices(gts, kind)
    if not slices:
        return None
    return SourceFile(case, modality, dataset, kind, image_path, label_path, slices)


def _parse_case_name(path: Path) -> tuple:
    """'3DBox_MR_pyradiomics-brain1' -> ('MR', 'pyradiomics', '3D')."""
    parts = path.stem.split("_", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise ValueError(f"{path}: cannot read modality and dataset from the name; evaluation-layout cases are "
                         "named <2DBox|3DBox>_<Modality>_<dataset>-<id>.npz.")
    kind = parts[0][:2] if parts[0][:2] in ("2D", "3D") else None
    return parts[1], parts[2].split("-")[0], kind


def _discover_evaluation(root: Path) -> list:
    found = []
    for image_path in npz_files_in(root / "imgs"):
        label_path = root / "gts" / image_path.name
        if not label_path.is_file():
            raise ValueError(f"{image_path} has no labels: expected {label_path}; add it or remove the case.")
        modality, dataset, kind = _parse_case_name(image_path)
        found.append(_source(image_path.stem, modality, dataset, image_path, label_path, kind))
    return found


def _discover_challenge(root: Path) -> list:
    return [_source(path.stem, path.parent.parent.name, path.parent.name, path, path)
            for folder in sorted(root.glob("*/*/")) for path in npz_files_in(folder)]


def discover(roots: Sequence[Path]) -> list[SourceFile]:
    """Every labelled image/volume under the roots, sorted; each root's layout is detected on its own."""
    if isinstance(roots, (str, Path)):  # a lone path would otherwise be iterated character by character
        roots = [roots]
    files = []
    for root in map(Path, roots):
        if (root / "imgs").is_dir() and (root / "gts").is_dir():
            found = _discover_evaluation(root)
        elif any(root.glob("*/*/*.npz")):
            found = _discover_challenge(root)
        else:
            raise ValueError(f"{root}: no .npz cases in a known layout; expected {root}/<Modality>/<dataset>/*.npz "
                             f"(challenge training) or {root}/imgs/*.npz with {root}/gts/*.npz (evaluation).")
        files.extend(f for f in found if f is not None)
    return sorted(files, key=lambda f: (f.modality, f.dataset, f.case, str(f.image_path)))


# ------------------------------------------------------------------------------------------- splitting


def split_by_case(files: Sequence[SourceFile], val_fraction: float = 0.2,
                  seed: int = 0) -> tuple[list[SourceFile], list[SourceFile]]:
    """(train, validation), split by case and stratified by modality; a lone case of a modality trains."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    cases_by_modality = {}
    for f in files:
        cases_by_modality.setdefault(f.modality, set()).add(f.case)
    validation = set()
    for modality, cases in sorted(cases_by_modality.items()):
        if len(cases) < 2:
            continue
        # At least one case each side, so every modality both trains and is validated.
        count = min(max(1, round(val_fraction * len(cases))), len(cases) - 1)
        # One generator per modality: adding a modality leaves the other modalities' splits unchanged.
        rng = np.random.default_rng((seed, zlib.crc32(modality.encode())))
        validation.update(rng.choice(sorted(cases), size=count, replace=False).tolist())
    return [f for f in files if f.case not in validation], [f for f in files if f.case in validation]


SPLIT_ROLES = ("train", "validation", "test")
TRAINING_ROLES = SPLIT_ROLES[:2]  # the lists training, calibration and selection may read
SPLIT_FILE_IN_REPO = "training/configs/split.yaml"  # relative to the repository root


def _split_lists(path: Path, role: str) -> frozenset:
    """One list of a split file, checked: all three lists present, and none of its cases in another list."""
    try:
        with open(path, encoding="utf-8") as stream:
            split = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the split file {path} ({error}); see {SPLIT_FILE_IN_REPO}.") from None
    missing = [name for name in SPLIT_ROLES if not isinstance(split.get(name), list)]
    if missing:
        raise ValueError(f"{path}: needs case lists {', '.join(missing)} (the keys train, validation and test).")
    cases = frozenset(split[role])
    for other in SPLIT_ROLES:
        leaked = sorted(cases & set(split[other])) if other != role else []
        if leaked:
            raise ValueError(f"{path}: {len(leaked)} case(s) are listed under both {role} and {other} (first: "
                             f"{leaked[0]}); a case belongs to one split only.")
    return cases


def split_cases(path: Path, role: str) -> frozenset:
    """The case names a split file (training/configs/split.yaml) gives to "train" or "validation".

    Test cases are never returned: the role "test" is refused, and a case listed under test and under the
    asked role is an error rather than a silent leak into training or epoch selection.
    """
    if role not in TRAINING_ROLES:
        raise ValueError(f"split role must be 'train' or 'validation', got {role!r}; test cases are for the final "
                         "evaluation only and are never handed to training or selection.")
    return _split_lists(path, role)


def evaluation_cases(path: Path, role: str) -> frozenset:
    """The case names of any list of a split file, test included: for evaluation commands only."""
    if role not in SPLIT_ROLES:
        raise ValueError(f"split role must be one of {', '.join(SPLIT_ROLES)}, got {role!r}.")
    return _split_lists(path, role)


def add_split_arguments(parser: argparse.ArgumentParser, default_part: str | None = None, *,
                        evaluation: bool = False) -> None:
    """`--split FILE --part LIST`: restrict a command to one list of a split file (read by `cases_from_split`).

    Calibration and training commands (evaluation=False) may ask for train or validation only; evaluation
    commands may also ask for test. Without --split a command uses every case under its --data.
    """
    parts = SPLIT_ROLES if evaluation else TRAINING_ROLES
    default_part = default_part or parts[0]
    parser.add_argument("--split", type=Path, default=None,
                        help=f"split file (e.g. {SPLIT_FILE_IN_REPO}): use only the cases of its --part list "
                             "(default: every case under --data)")
    parser.add_argument("--part", choices=parts, default=default_part,
                        help=f"which list of --split (default {default_part})")


def cases_from_split(args: argparse.Namespace) -> frozenset | None:
    """The case names `add_split_arguments`' options select, or None when no --split was given."""
    if args.split is None:
        return None
    return (evaluation_cases if args.part == "test" else split_cases)(args.split, args.part)


def split_record(args: argparse.Namespace) -> dict | None:
    """{"file": path relative to the repository, "part": list} for provenance records, or None without --split."""
    if args.split is None:
        return None
    path = Path(args.split).resolve()
    shown = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else path.name
    return {"file": shown, "part": args.part}


# -------------------------------------------------------------------------------------------- indexing


class SliceIndex:
    """Global sample number -> (file, slice): cumulative counts and a binary search, no per-slice table."""

    def __init__(self, files: Sequence[SourceFile]):
        self.files = list(files)
        self._counts = np.array([len(f.slices) for f in self.files], np.int64)
        self._ends = np.cumsum(self._counts)

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def locate(self, index) -> tuple[int, int]:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        position = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[position - 1]) if position else 0
        return position, int(self.files[position].slices[index - start])

    def modality_of(self, index) -> str:
        return self.files[self.locate(index)[0]].modality

    def indices_by_modality(self) -> dict[str, np.ndarray]:
        names, code = np.unique(np.array([f.modality for f in self.files], dtype=str), return_inverse=True)
        sample_code = np.repeat(code.reshape(-1), self._counts)  # modality code of every sample
        return {str(name): np.flatnonzero(sample_code == i) for i, name in enumerate(names)}


# ------------------------------------------------------------------------------------- sample geometry


def nearest_resize(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(..., INTER_NEAREST) of a label map: source index floor(dst * src_len / dst_len).

    Integer arithmetic keeps the floor exact; label values are only ever copied, never mixed.
    """
    rows = np.arange(height) * labels.shape[0] // height
    cols = np.arange(width) * labels.shape[1] // width
    return labels[rows[:, None], cols[None, :]]


def flip_valid_region(array: np.ndarray, resized_hw: tuple, horizontal: bool, vertical: bool) -> np.ndarray:
    """Flip the top-left resized (h, w) region of the last two axes; the zero padding stays bottom/right."""
    height, width = resized_hw
    region = array[..., :height, :width]
    if horizontal:
        region = region[..., :, ::-1]
    if vertical:
        region = region[..., ::-1, :]
    out = array.copy()
    out[..., :height, :width] = region
    return out


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    """[x_min, y_min, x_max, y_max] of a non-empty 2D mask, inclusive pixel indices (MedSAM convention)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], np.int64)


def jitter_box(box: np.ndarray, rng: np.random.Generator, max_jitter: int) -> np.ndarray:
    """Each side moved outward by its own random 0..max_jitter pixels, clipped to the 256 frame.

    Clipped to 255, the last pixel index, as LiteMedSAM's training data set does (min(W - 1, x_max + shift)):
    the box is in inclusive pixel indices like `mask_bbox`. (Inference's 3D propagation box clips to 256
    instead, as the official inference script does; that rule lives in qmedsam.preprocess.)
    """
    shift = rng.integers(0, max_jitter + 1, size=4)
    moved = box + np.array([-1, -1, 1, 1]) * shift
    return np.clip(moved, 0, MODEL_SIZE - 1)


def _pad(mask: np.ndarray) -> np.ndarray:
    padded = np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    return padded


# --------------------------------------------------------------------------------------------- dataset


class BoxPromptDataset(torch.utils.data.Dataset):
    """One sample per labelled 2D image / 3D slice: model input, one object's mask and its box prompt.

    Randomness (label, flips, jitter) depends only on (seed, epoch, index), so results do not depend on
    worker count or order. Call set_epoch before each epoch; DataLoader workers copy the dataset when they
    start, so with persistent_workers=True they would keep the old epoch.
    """

    def __init__(self, files: Sequence[SourceFile], augment: bool = True, max_jitter: int = 10, seed: int = 0,
                 cache_files: int = 4):
        self.index = SliceIndex(files)
        self.files = self.index.files
        self.augment = augment
        self.max_jitter = max_jitter
        self.seed = seed
        self.epoch = 0
        self.cache_files = cache_files
        self._cache = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self):
        # Workers start with an empty cache rather than a pickled copy of decompressed volumes.
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _arrays(self, position: int) -> tuple:
        """(imgs, gts) of one file through a small LRU cache: neighbouring slices share one decompression."""
        if position in self._cache:
            self._cache.move_to_end(position)
            return self._cache[position]
        source = self.files[position]
        imgs, gts = _load_array(source.image_path, "imgs"), _load_array(source.label_path, "gts")
        _check_shapes(imgs.shape, gts.shape, str(source.image_path))
        if self.cache_files > 0:
            self._cache[position] = (imgs, gts)
            while len(self._cache) > self.cache_files:
                self._cache.popitem(last=False)
        return imgs, gts

    def __getitem__(self, index) -> dict:
        index = operator.index(index)
        position, z = self.index.locate(index)
        source = self.files[position]
        imgs, gts = self._arrays(position)
        image, labels = (imgs[z], gts[z]) if source.kind == "3D" else (imgs, gts)
        where = f"{source.case} slice {z}" if source.kind == "3D" else source.case

        rng = np.random.default_rng((self.seed, self.epoch, index))
        model_input, resized_hw = to_model_input(image)
        label, mask = _choose_object(labels, resized_hw, rng, where)
        image_out, mask_out = model_input[0], _pad(mask)
        if self.augment:
            horizontal, vertical = rng.random(2) < 0.5
            image_out = flip_valid_region(image_out, resized_hw, horizontal, vertical)
            mask_out = flip_valid_region(mask_out, resized_hw, horizontal, vertical)
        box = mask_bbox(mask_out > 0)  # after the flips, so the box follows the object
        if self.augment and self.max_jitter > 0:
            box = jitter_box(box, rng, self.max_jitter)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image_out, np.float32)),
            "mask": torch.from_numpy(mask_out[None]),
            "box": torch.from_numpy(box.astype(np.float32)),
            "label": label,
            "case": source.case,
            "slice": z,
            "modality": source.modality,
        }


def _choose_object(labels: np.ndarray, resized_hw: tuple, rng: np.random.Generator, where: str) -> tuple:
    """(label, resized binary mask) of one object drawn uniformly among those present.

    Drawing among the labels that survive the nearest resize is the same distribution as redrawing
    whenever the chosen label vanishes. When none survives (only sub-pixel objects), the largest object
    is kept with the pixels it covers at all, so a tiny object still gives a non-empty mask and box.
    """
    small = nearest_resize(labels, *resized_hw)
    survivors = np.unique(small)
    survivors = survivors[survivors != 0]
    if survivors.size:
        label = survivors[rng.integers(survivors.size)]
        return int(label), (small == label).astype(np.float32)
    present, counts = np.unique(labels[labels != 0], return_counts=True)
    if present.size == 0:
        raise ValueError(f"{where}: no labelled pixels; discover() keeps only labelled slices, so the file "
                         "changed on disk or the SourceFile was built by hand.")
    label = present[np.argmax(counts)]
    coverage = area_resize((labels == label).astype(np.float32), *resized_hw)
    return int(label), (coverage > 0).astype(np.float32)


# --------------------------------------------------------------------------------------------- sampler


def _per_modality_counts(counts: dict, rule) -> dict:
    smallest = min(counts.values())
    if isinstance(rule, int) and not isinstance(rule, bool) and rule > 0:
        return {m: rule for m in counts}  # a fixed N_s (the paper's Table 3: 900), drawn with replacement if short
    if rule == "min":
        return {m: smallest for m in counts}
    if rule == "tenth":
        return {m: min(max(n // 10, smallest), n) for m, n in counts.items()}
    raise ValueError(f"per_modality must be 'min', 'tenth' or a positive number, got {rule!r}.")


def _distributed_defaults(num_replicas, rank) -> tuple:
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if num_replicas is None:
        num_replicas = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} is not in [0, num_replicas={num_replicas}).")
    return num_replicas, rank


class ModalityBalancedSampler(torch.utils.data.Sampler):
    """Each epoch, N_s(m) fresh samples from every modality m, shuffled and sharded across DDP ranks."""

    def __init__(self, index: SliceIndex, per_modality: str | int = "min", seed: int = 0,
                 num_replicas: int | None = None, rank: int | None = None):
        self.by_modality = {m: ids for m, ids in index.indices_by_modality().items() if ids.size}
        if not self.by_modality:
            raise ValueError("no samples to draw from: the index is empty.")
        self.rule = per_modality
        self.samples_per_modality = _per_modality_counts({m: ids.size for m, ids in self.by_modality.items()},
                                                         per_modality)
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = _distributed_defaults(num_replicas, rank)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_draw(self) -> np.ndarray:
        """This epoch's samples over all ranks, shuffled, before padding and sharding."""
        rng = np.random.default_rng((self.seed, self.epoch))
        drawn = [rng.choice(ids, size=self.samples_per_modality[m], replace=self.samples_per_modality[m] > ids.size)
                 for m, ids in sorted(self.by_modality.items())]
        return rng.permutation(np.concatenate(drawn))

    def _total(self) -> int:
        return sum(self.samples_per_modality.values())

    def __len__(self) -> int:
        return math.ceil(self._total() / self.num_replicas)

    def __iter__(self):
        draw = self.epoch_draw()
        # Repeat the start so every rank gets the same number of batches (DDP would hang otherwise).
        padded = np.resize(draw, len(self) * self.num_replicas)
        return iter(padded[self.rank::self.num_replicas].tolist())


def collate(samples: list[dict]) -> dict:
    """DataLoader collate_fn: image/mask/box stacked into tensors, the descriptive fields as lists."""
    stacked = ("image", "mask", "box")
    return {key: torch.stack([s[key] for s in samples]) if key in stacked else [s[key] for s in samples]
            for key in samples[0]}
