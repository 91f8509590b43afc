"""The training pool: labelled 2D images from public GitHub snapshots, in the evaluation layout.

    python -m training.datasets.build_pool MIRRORS [MIRRORS ...] [--out ../pool] [--split training/configs/split.yaml]

MIRRORS are folders holding bare git mirrors as <owner>+<name>/repo (or such git folders themselves); nothing
is downloaded. Every source is read at a pinned commit, so the same mirrors always give the same pool:
OUT/imgs/2DBox_<Modality>_<dataset>-<id>.npz (imgs uint8 H x W x 3, boxes int64 N x 4) and
OUT/gts/<same>.npz (gts uint8 H x W, label i <-> boxes[i-1]), the layout of ../shared/data, with
OUT/MANIFEST.md and OUT/manifest.json recording each case's repository, commit, paths, licence and modality.

Objects are the source's manual masks: binarised (> 127, the sources store 8-bit masks, many as JPEG),
split into 8-connected components of at least MIN_AREA_FRACTION of the image (or kept whole where the
source says so: a vessel tree is one object), and each box is its mask's bounding box.
Images larger than MAX_SIDE are downscaled (image bilinear, mask nearest).

Refused: the repositories and packages reserved for independent evaluation (FORBIDDEN), images whose
pixels are identical (sha256) or nearly identical (same 32 x 32 thumbnail within 2 grey levels) to an image
of ../shared/data, and images identical to one already in the pool. Sources re-cut from one dataset are
not combined (Kvasir-Sessile, a subset of Kvasir-SEG re-cut differently, is left out for that reason).
The pool is written outside the repository only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import yaml
from PIL import Image
from qmedsam.npz_io import npz_files_in, read_npz_arrays
from scipy import ndimage

from training.datasets.cases import DEFAULT_DATA, mask_bbox
from training.provenance import REPO_ROOT

MAX_SIDE = 1024
MIN_AREA_FRACTION = 2e-4  # a component below 0.02 % of the image (52 px at 512 x 512) is noise or a JPEG artefact
MAX_OBJECTS = 255  # gts is uint8, as in shared/data
THUMBNAIL = 32
NEAR_DUPLICATE_GREY_LEVELS = 2.0

# Reserved for independent evaluation (issue 16): never read, whatever a source list says.
FORBIDDEN = (
    "github:opengvlab/sam-med2d",
    "github:nickyisadog/latent-diffusion-inpainting",
    "github:thisismexp/artefact_insertion",
    "github:suraj7974/tensorflow-keras-unet-model-for-fetal-dataset",
    "github:generalblockchain/covid-19-chest-xray-segmentations-dataset",
    "github:orobix/retina-unet",
    "github:sarah-antillia/tensorflow-image-segmentation-cdd-cesm-mammogram",
    "github:wasserth/totalsegmentator",
    "pypi:nilearn",
    "pypi:pyradiomics",
    "pypi:stardist",
)

# Augmented copies that some snapshots keep next to the originals: only originals enter the pool.
AUGMENTED_NAME = re.compile(r"^(deformed|distorted|flipped|hflipped|vflipped|mirrored|rotated|barrel|pincushion|"
                            r"shrinked|sheared|elastic|resized)_", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    origin: str  # "github:<owner>/<name>"
    commit: str
    modality: str  # as in shared/data: CT, MR, US, XRay, Endoscopy, Dermoscopy, Microscope, Fundus, Mammography
    dataset: str  # one lower-case word: the case names' <dataset>
    images: str  # folder in the repository
    masks: str
    licence: str
    label_type: str
    objects: str = "components"  # or "whole": all foreground is one object
    fill_holes: bool = False  # outline annotations (an ellipse drawn as a line) are filled
    mask_suffix: str = ""  # mask file stem = image stem + this


SARAH = "projects/TensorflowSlightlyFlexibleUNet"
APACHE = "repo Apache-2.0"
SOURCES: tuple[Source, ...] = (
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Spleen",
           "6e30b8af38408ed6569971229960cc626017de9d", "CT", "msdspleen",
           f"{SARAH}/Spleen/mini_test/images", f"{SARAH}/Spleen/mini_test/masks",
           f"{APACHE}; Medical Segmentation Decathlon Task09 Spleen (CC BY-SA 4.0)", "manual (MSD)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Lung-Tumor",
           "12c5b10719dda8b88c2a33bee58b31a6b95d553c", "CT", "msdlung",
           f"{SARAH}/Lung-Tumor/mini_test/images", f"{SARAH}/Lung-Tumor/mini_test/masks",
           f"{APACHE}; Medical Segmentation Decathlon Task06 Lung (CC BY-SA 4.0)", "manual (MSD)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Hepatic-Vessel",
           "4ce0e7713552343cf352ff05a89379ba1c162196", "CT", "msdhepaticvessel",
           f"{SARAH}/Hepatic-Vessel/mini_test/images", f"{SARAH}/Hepatic-Vessel/mini_test/masks",
           f"{APACHE}; Medical Segmentation Decathlon Task08 HepaticVessel (CC BY-SA 4.0)", "manual (MSD)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Left-Atrial",
           "88b26e9d8c5e84c06ddac87d9b230012d9237b85", "MR", "msdheart",
           f"{SARAH}/Left-Atrial/mini_test/images", f"{SARAH}/Left-Atrial/mini_test/masks",
           f"{APACHE}; Medical Segmentation Decathlon Task02 Heart, left atrium (CC BY-SA 4.0)", "manual (MSD)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Multiple-Sclerosis-Brain-MRI-Flair",
           "1d3cdc9a04ab3fa89640b7b3d583dde766a5be0e", "MR", "msflair",
           f"{SARAH}/Multiple-Sclerosis-Brain-MRI-Flair/flair_mini_test/images",
           f"{SARAH}/Multiple-Sclerosis-Brain-MRI-Flair/flair_mini_test/masks",
           f"{APACHE}; Brain MRI dataset of multiple sclerosis, FLAIR lesions (Mendeley Data, CC BY 4.0)",
           "manual (lesion masks)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Brain-Tumor",
           "989be6e480a1ca013174e4389acb40b84aea9efd", "MR", "lggflair",
           f"{SARAH}/Brain-Tumor/mini_test/images", f"{SARAH}/Brain-Tumor/mini_test/masks",
           f"{APACHE}; LGG MRI segmentation, TCGA FLAIR (Buda et al. 2019; Kaggle, CC BY-NC-SA 4.0)",
           "manual (tumour)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-BUS-UC-Malignant",
           "5f27b0f85ddb84b368aa1418dbb4f1d8aa71374b", "US", "busuc",
           f"{SARAH}/BUS-UC-Malignant/mini_test/images", f"{SARAH}/BUS-UC-Malignant/mini_test/masks",
           f"{APACHE}; BUS-UC breast ultrasound (Mendeley Data 3ksd7w7jkx, CC BY 4.0)", "manual (tumour)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Fetal-Head",
           "b6798bb6f21cf5f73d985ef0f1fa027b2a82e075", "US", "hc18",
           f"{SARAH}/Fetal-Head/mini_test/images", f"{SARAH}/Fetal-Head/mini_test/masks",
           f"{APACHE}; HC18 grand challenge (Zenodo 1327317, CC BY 4.0)", "manual ellipse outline, filled",
           fill_holes=True),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Common-Carotid-Artery-UltraSound-Images",
           "f2673b119f95d6c360d0d0714144cd51ec9c4215", "US", "ccaus",
           f"{SARAH}/CCAUS/mini_test/images", f"{SARAH}/CCAUS/mini_test/masks",
           f"{APACHE}; Common carotid artery ultrasound images (Mendeley Data, CC BY 4.0)", "manual (artery)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Gastrointestinal-Polyp",
           "22a801974ebdc261886ae5634584a697dd6d5369", "Endoscopy", "kvasirseg",
           f"{SARAH}/Gastrointestinal-Polyp/mini_test/images", f"{SARAH}/Gastrointestinal-Polyp/mini_test/masks",
           f"{APACHE}; Kvasir-SEG (Simula; research and education use, cite Jha et al. MMM 2020)",
           "manual (Kvasir-SEG)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Augmented-Skin-Cancer",
           "840a97dcde9811a0903c4e7cb60048d992ef7136", "Dermoscopy", "isic",
           f"{SARAH}/Skin-Cancer/mini_test/images", f"{SARAH}/Skin-Cancer/mini_test/masks",
           f"{APACHE}; ISIC challenge lesion segmentation (CC0, as the repository states)", "manual (ISIC)",
           mask_suffix="_segmentation"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-FIVES-Retinal-Vessel",
           "3066afb41c9ff1842f9ba364ec9687e7b6435c37", "Fundus", "fives",
           f"{SARAH}/FIVES/mini_test/images", f"{SARAH}/FIVES/mini_test/masks",
           f"{APACHE}; FIVES fundus vessel dataset (figshare 19688169, CC BY 4.0)", "manual (vessel tree)",
           objects="whole"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Pre-Augmented-Coronary-Artery-Disease",
           "0975e414469e92d7ecf2b3f6d3b693cc97c5b4ea", "XRay", "arcade",
           f"{SARAH}/Stenosis/mini_test/images", f"{SARAH}/Stenosis/mini_test/masks",
           f"{APACHE}; ARCADE coronary angiography, stenosis (Zenodo 7981245, CC BY 4.0)", "manual (stenosis)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-Pre-Augmented-Mammogram-Density",
           "8c83e0429a7a43d45e0a8c25f8b3a92f283f2c85", "Mammography", "mammodensity",
           f"{SARAH}/Mammogram-Density/mini_test/images", f"{SARAH}/Mammogram-Density/mini_test/masks",
           f"{APACHE}; mammogram dense-tissue dataset (Mendeley Data tdx3h2fn9v, CC BY 4.0)",
           "manual (dense tissue, radiologist)"),
    Source("github:sarah-antillia/Tensorflow-Image-Segmentation-MoNuSAC-2020",
           "3e904577f07bdb5d54e7fa396dbb390fa050de13", "Microscope", "monusac",
           f"{SARAH}/MoNuSAC/mini_test/images", f"{SARAH}/MoNuSAC/mini_test/masks",
           f"{APACHE}; MoNuSAC 2020 (CC BY-NC-SA 4.0)", "manual nuclei (touching nuclei merge)"),
    Source("github:zhixuhao/unet", "b45af4d458437d8281cc218a07fd4380818ece4a", "Microscope", "isbi2012em",
           "data/membrane/train/image", "data/membrane/train/label",
           "repo MIT; ISBI 2012 EM segmentation challenge training volume (Cardona et al. 2010)",
           "manual (cells between membranes)"),
)


# --- pure parts -----------------------------------------------------------------------------------------

def check_allowed(origin: str) -> None:
    """Refuses a source reserved for independent evaluation (a one-line error naming it)."""
    key = origin.lower().rstrip("/")
    if key.startswith("pypi:"):
        key = re.split(r"[=<>@ ]", key)[0]
    if key in FORBIDDEN:
        raise ValueError(f"{origin} is reserved for independent evaluation (issue 16) and may not enter the "
                         "training pool; remove it from the source list.")


def pixel_sha256(image: np.ndarray) -> str:
    """sha256 of the pixels as the pool stores them (uint8 H x W x 3), independent of the file format."""
    return hashlib.sha256(np.ascontiguousarray(as_rgb(image)).tobytes()).hexdigest()


def thumbnail(image: np.ndarray) -> np.ndarray:
    grey = as_rgb(image).astype(np.float32).mean(axis=2)
    return np.asarray(Image.fromarray(grey).resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR), dtype=np.float32)


def as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        image = image[..., :3]
    return image.astype(np.uint8)


class Reference:
    """The images that must not enter the pool: ../shared/data's (and, as it grows, the pool's own)."""

    def __init__(self, images: Iterable[np.ndarray] = ()) -> None:
        self.hashes: set[str] = set()
        self.thumbnails: list[np.ndarray] = []
        for image in images:
            self.add(image)

    def add(self, image: np.ndarray) -> None:
        self.hashes.add(pixel_sha256(image))
        self.thumbnails.append(thumbnail(image))

    def duplicate_of(self, image: np.ndarray) -> Optional[str]:
        """'identical' / 'near-identical' when the image is (almost) one of the references, else None."""
        if pixel_sha256(image) in self.hashes:
            return "identical"
        small = thumbnail(image)
        if any(np.abs(small - other).mean() < NEAR_DUPLICATE_GREY_LEVELS for other in self.thumbnails):
            return "near-identical"
        return None


def shared_data_images(root: Path) -> list[np.ndarray]:
    """Every 2D image and every slice of every 3D image of an evaluation-layout folder."""
    images = []
    for path in npz_files_in(root / "imgs"):
        array = read_npz_arrays(path, ("imgs",), needs="a case holds 'imgs'")["imgs"]
        if path.name.startswith("3D"):
            images.extend(_window_to_uint8(array[z]) for z in range(array.shape[0]))
        else:
            images.append(array)
    return images


def _window_to_uint8(slice_: np.ndarray) -> np.ndarray:
    if slice_.dtype == np.uint8:
        return slice_
    low, high = float(slice_.min()), float(slice_.max())
    return np.round((slice_ - low) / max(high - low, 1e-6) * 255).astype(np.uint8)


def objects_from_mask(mask: np.ndarray, mode: str = "components", fill_holes: bool = False) -> np.ndarray:
    """Label map (uint8, 0 = background) of the objects in an 8-bit mask (H x W or H x W x C)."""
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    foreground = mask > 127
    if fill_holes:
        foreground = ndimage.binary_fill_holes(foreground)
    min_area = max(1, int(round(MIN_AREA_FRACTION * foreground.size)))
    if mode == "whole":
        return (foreground if foreground.sum() >= min_area else np.zeros_like(foreground)).astype(np.uint8)
    if mode != "components":
        raise ValueError(f"objects must be 'components' or 'whole', got {mode!r}")
    components, count = ndimage.label(foreground, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(components.ravel(), minlength=count + 1)[1:]
    keep = [label for label in range(1, count + 1) if areas[label - 1] >= min_area]
    if len(keep) > MAX_OBJECTS:  # the largest ones, in scan order
        largest = set(sorted(keep, key=lambda label: (-areas[label - 1], label))[:MAX_OBJECTS])
        keep = [label for label in keep if label in largest]
    relabel = np.zeros(count + 1, dtype=np.uint8)
    relabel[keep] = np.arange(1, len(keep) + 1)
    return relabel[components]


def boxes_from_labels(labels: np.ndarray) -> np.ndarray:
    """boxes[i-1] = [x_min, y_min, x_max, y_max] (inclusive) of label i, int64 N x 4."""
    count = int(labels.max())
    return np.stack([mask_bbox(labels == label) for label in range(1, count + 1)]).astype(np.int64) \
        if count else np.zeros((0, 4), np.int64)


def case_name(modality: str, dataset: str, stem: str) -> str:
    """2DBox_<Modality>_<dataset>-<id>: the dataset is one word, the id keeps letters and digits only."""
    return f"2DBox_{modality}_{dataset}-{re.sub(r'[^A-Za-z0-9]', '', stem)}"


def write_case(out: Path, name: str, image: np.ndarray, labels: np.ndarray) -> dict:
    """Writes OUT/imgs/<name>.npz (imgs, boxes) and OUT/gts/<name>.npz (gts); returns what it wrote."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{name}: image {image.shape[:2]} and mask {labels.shape} differ in size")
    boxes = boxes_from_labels(labels)
    if not len(boxes):
        raise ValueError(f"{name}: no object in the mask")
    (out / "imgs").mkdir(parents=True, exist_ok=True)
    (out / "gts").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "imgs" / f"{name}.npz", imgs=as_rgb(image), boxes=boxes)
    np.savez_compressed(out / "gts" / f"{name}.npz", gts=labels.astype(np.uint8))
    return {"shape": list(image.shape[:2]), "objects": int(len(boxes)), "pixel_sha256": pixel_sha256(image)}


def downscaled(image: np.ndarray, mask: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return image, mask
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_image = np.asarray(Image.fromarray(as_rgb(image)).resize(size, Image.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST))
    return small_image, small_mask


def refuse_inside_repository(out: Path) -> None:
    if out.resolve().is_relative_to(REPO_ROOT):
        raise ValueError(f"--out {out} is inside the repository; the pool must stay outside it (default ../pool).")


# --- reading snapshots ----------------------------------------------------------------------------------

def find_git_dir(mirrors: Sequence[Path], origin: str) -> Path:
    """The bare mirror of `origin` ("github:owner/name"): MIRRORS/<owner>+<name>/repo, or a MIRRORS entry
    that is that folder itself."""
    folder = origin.split(":", 1)[1].replace("/", "+")
    for root in mirrors:
        for candidate in (root / folder / "repo", root / "repo" if root.name == folder else None,
                          root if root.parent.name == folder else None):
            if candidate is not None and (candidate / "objects").is_dir():
                return candidate
    raise FileNotFoundError(f"no mirror of {origin} under {', '.join(map(str, mirrors))}; bring it with the "
                            f"fetch tool ({origin}) and pass the folder that holds it.")


def _git(git_dir: Path, *args: str) -> bytes:
    result = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False)
    if result.returncode:
        raise RuntimeError(f"git {' '.join(args)} in {git_dir}: {result.stderr.decode().strip()}")
    return result.stdout


def _read_image(git_dir: Path, commit: str, path: str) -> Optional[np.ndarray]:
    """The file as an array, or None when the snapshot lacks its content (large files may be absent)."""
    try:
        data = _git(git_dir, "cat-file", "blob", f"{commit}:{path}")
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    except (RuntimeError, OSError, ValueError):  # absent from the snapshot, or not an image: skipped, reported
        return None


def pairs(git_dir: Path, source: Source, commit: str) -> list[tuple[str, str, str]]:
    """(stem, image path, mask path) for every original image with a mask, sorted by stem."""
    listed = _git(git_dir, "ls-tree", "-r", "--name-only", commit, "--", source.images + "/",
                  source.masks + "/").decode().splitlines()
    masks = {Path(p).stem: p for p in listed if p.startswith(source.masks + "/")}
    found = []
    for path in listed:
        stem = Path(path).stem
        if path.startswith(source.images + "/") and not AUGMENTED_NAME.match(stem) \
                and stem + source.mask_suffix in masks:
            found.append((stem, path, masks[stem + source.mask_suffix]))
    return sorted(found)


def build(mirrors: Sequence[Path], out: Path, sources: Sequence[Source] = SOURCES,
          shared_data: Path = DEFAULT_DATA) -> dict:
    refuse_inside_repository(out)
    for source in sources:
        check_allowed(source.origin)
    reference = Reference(shared_data_images(shared_data))
    pool = Reference()
    cases, skipped = [], []
    for source in sources:
        git_dir = find_git_dir(mirrors, source.origin)
        commit = _git(git_dir, "rev-parse", "--verify", f"{source.commit}^{{commit}}").decode().strip()
        for stem, image_path, mask_path in pairs(git_dir, source, commit):
            where = f"{source.origin}@{commit[:12]}:{image_path}"
            image, mask = _read_image(git_dir, commit, image_path), _read_image(git_dir, commit, mask_path)
            if image is None or mask is None:
                skipped.append({"file": where, "reason": "content absent from the snapshot"})
                continue
            image, mask = downscaled(as_rgb(image), mask)
            duplicate = reference.duplicate_of(image)
            if duplicate:
                skipped.append({"file": where, "reason": f"{duplicate} to an image of shared/data"})
                continue
            # Only exact copies: neighbouring slices of one volume, or fundus photographs of different eyes,
            # have near-identical thumbnails without being the same image.
            if pool.duplicate_of(image) == "identical":
                skipped.append({"file": where, "reason": "identical to an image already in the pool"})
                continue
            labels = objects_from_mask(mask, source.objects, source.fill_holes)
            if not labels.any():
                skipped.append({"file": where, "reason": "no object above the minimum area"})
                continue
            name = case_name(source.modality, source.dataset, stem)
            written = write_case(out, name, image, labels)
            pool.add(image)
            cases.append({"case": name, "modality": source.modality, "dataset": source.dataset,
                          "repository": source.origin, "commit": commit, "image": image_path, "mask": mask_path,
                          "licence": source.licence, "label_type": source.label_type, **written})
    manifest = {"command": "python -m training.datasets.build_pool " + " ".join(sys.argv[1:]),
                "sources": [asdict(s) for s in sources], "cases": cases, "skipped": skipped,
                "counts": modality_counts(cases)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "MANIFEST.md").write_text(manifest_markdown(manifest))
    return manifest


def modality_counts(cases: Sequence[dict]) -> dict:
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["modality"]] = counts.get(case["modality"], 0) + 1
    return dict(sorted(counts.items()))


def manifest_markdown(manifest: dict) -> str:
    counts = manifest["counts"]
    lines = ["# Training pool (built by training/datasets/build_pool.py; not for redistribution beyond the licences"
             " below)",
             "", f"{sum(counts.values())} labelled 2D cases, {len(counts)} modalities: "
             + ", ".join(f"{m} {n}" for m, n in counts.items()) + ".", "",
             "Layout and conventions as ../shared/data (imgs/<case>.npz: imgs, boxes; gts/<case>.npz: gts; "
             "label i <-> boxes[i-1], boxes [x_min, y_min, x_max, y_max] inclusive, derived from the masks).", "",
             "| case | modality | repository@commit | image / mask | licence | shape | objects | label type |",
             "|---|---|---|---|---|---|---|---|"]
    for case in manifest["cases"]:
        lines.append(f"| {case['case']} | {case['modality']} | {case['repository']}@{case['commit'][:12]} | "
                     f"{case['image']} / {Path(case['mask']).name} | {case['licence']} | "
                     f"{case['shape'][0]}x{case['shape'][1]} | {case['objects']} | {case['label_type']} |")
    if manifest["skipped"]:
        lines += ["", "## Skipped", "", "| file | reason |", "|---|---|"]
        lines += [f"| {s['file']} | {s['reason']} |" for s in manifest["skipped"]]
    return "\n".join(lines) + "\n"


# --- split proposal -------------------------------------------------------------------------------------

def propose_split(cases: Sequence[dict], held_out: Sequence[str]) -> dict:
    """train / validation / test case lists, whole source repositories per split where the modality allows.

    Per modality, sources sorted by size: with 3 or more, the smallest is test, the next validation, the rest
    train; with 2, the larger trains and the smaller is halved into validation and test; a modality with a
    single source splits its cases 60/20/20 (by a hash of the name, so adding cases moves no other case).
    `held_out` (shared/data's cases) all go to test.
    """
    by_modality: dict[str, dict[str, list[str]]] = {}
    for case in cases:
        by_modality.setdefault(case["modality"], {}).setdefault(case["repository"], []).append(case["case"])
    split: dict[str, list[str]] = {"train": [], "validation": [], "test": list(held_out)}
    for modality in sorted(by_modality):
        sources = sorted(by_modality[modality].items(), key=lambda item: (len(item[1]), item[0]))
        if len(sources) >= 3:
            split["test"] += sources[0][1]
            split["validation"] += sources[1][1]
            for _, names in sources[2:]:
                split["train"] += names
        elif len(sources) == 2:
            split["train"] += sources[1][1]
            for name in sources[0][1]:
                split["validation" if _fraction(name) < 0.5 else "test"].append(name)
        else:
            for name in sources[0][1]:
                fraction = _fraction(name)
                split["train" if fraction < 0.6 else "validation" if fraction < 0.8 else "test"].append(name)
    return {part: sorted(names) for part, names in split.items()}


def _fraction(name: str) -> float:
    return zlib.crc32(name.encode()) / 2 ** 32


def write_split(path: Path, split: dict, note: str) -> None:
    header = "\n".join(f"# {line}" if line else "#" for line in note.splitlines())
    path.write_text(header + "\n" + yaml.safe_dump(split, sort_keys=False, width=120))


SPLIT_NOTE = """Train / validation / test cases for the shipped models (issue 16): no model is trained, calibrated or
selected on a test case. Proposed by training/datasets/build_pool.py over the pool
(python -m training.datasets.build_pool MIRRORS --split training/configs/split.yaml) plus ../shared/data's
16 cases, all in test.
Per modality, whole source repositories go to one split where there are 3 or more; a modality with 2
sources trains on the larger and halves the smaller into validation and test; a modality with a single
source ({single} here) splits that repository's cases 60/20/20."""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirrors", type=Path, nargs="+", help="folders with <owner>+<name>/repo git mirrors")
    parser.add_argument("--out", type=Path, default=REPO_ROOT.parent / "pool")
    parser.add_argument("--shared-data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", type=Path, help="also write the split proposal here (YAML)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.mirrors, args.out, shared_data=args.shared_data)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise SystemExit(str(error)) from None
    held_out = sorted(p.stem for p in (args.shared_data / "imgs").glob("*.npz"))
    if args.split:
        repositories: dict[str, set] = {}
        for case in manifest["cases"]:
            repositories.setdefault(case["modality"], set()).add(case["repository"])
        single = ", ".join(m for m, found in sorted(repositories.items()) if len(found) == 1) or "none"
        write_split(args.split, propose_split(manifest["cases"], held_out), SPLIT_NOTE.format(single=single))
    counts = manifest["counts"]
    print(f"{sum(counts.values())} cases ({', '.join(f'{m} {n}' for m, n in counts.items())}) in {args.out}; "
          f"{len(manifest['skipped'])} skipped (see MANIFEST.md)")


if __name__ == "__main__":
    main()
