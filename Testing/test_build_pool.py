"""The training-pool builder's parts on tiny hand-made arrays, and one build from a real (local) git snapshot."""

import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from training.datasets.build_pool import (
    Reference,
    Source,
    boxes_from_labels,
    build,
    case_name,
    check_allowed,
    objects_from_mask,
    propose_split,
    refuse_inside_repository,
    write_case,
)
from training.datasets.cases import BoxPromptDataset, discover
from training.provenance import REPO_ROOT


def _two_blobs_and_a_speck(size=100):
    mask = np.zeros((size, size), np.uint8)
    mask[10:20, 30:45] = 255  # 150 px
    mask[60:90, 5:12] = 200  # 210 px, another grey level above the threshold
    mask[95, 95] = 255  # 1 px: below the minimum area
    mask[50:55, 50:55] = 100  # below the 127 threshold (a JPEG halo)
    return mask


def test_objects_are_the_mask_components_and_boxes_their_inclusive_extent():
    labels = objects_from_mask(_two_blobs_and_a_speck())
    assert labels.dtype == np.uint8 and labels.max() == 2
    np.testing.assert_array_equal(boxes_from_labels(labels), [[30, 10, 44, 19], [5, 60, 11, 89]])
    whole = objects_from_mask(_two_blobs_and_a_speck(), mode="whole")
    assert whole.max() == 1 and whole.sum() == 150 + 210 + 1
    rgb = np.repeat(_two_blobs_and_a_speck()[..., None], 3, axis=2)
    np.testing.assert_array_equal(objects_from_mask(rgb), labels)


def test_an_outline_annotation_is_filled_when_the_source_says_so():
    ring = np.zeros((60, 60), np.uint8)
    yy, xx = np.mgrid[:60, :60]
    ring[np.abs(np.hypot(yy - 30, xx - 30) - 20) < 1.0] = 255
    assert objects_from_mask(ring, fill_holes=True).sum() > 3 * objects_from_mask(ring).sum()


def test_cases_are_written_in_the_evaluation_layout_the_training_reads(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8)
    labels = objects_from_mask(_two_blobs_and_a_speck())
    name = case_name("US", "toy", "img_01.a")
    assert name == "2DBox_US_toy-img01a"
    written = write_case(tmp_path, name, image, labels)
    assert written["objects"] == 2
    with np.load(tmp_path / "imgs" / f"{name}.npz", allow_pickle=False) as case:
        assert case["imgs"].shape == (100, 100, 3) and case["imgs"].dtype == np.uint8
        np.testing.assert_array_equal(case["boxes"], boxes_from_labels(labels))
    files = discover([tmp_path])
    assert [(f.case, f.modality, f.dataset) for f in files] == [(name, "US", "toy")]
    sample = BoxPromptDataset(files, augment=False)[0]
    assert sample["mask"].sum() > 0
    with pytest.raises(ValueError, match="no object"):
        write_case(tmp_path, name, image, np.zeros_like(labels))


@pytest.mark.parametrize("origin", ["github:OpenGVLab/SAM-Med2D", "github:wasserth/totalsegmentator",
                                    "pypi:stardist==0.9.2", "github:sarah-antillia/"
                                    "Tensorflow-Image-Segmentation-CDD-CESM-Mammogram"])
def test_sources_reserved_for_evaluation_are_refused(origin, tmp_path):
    with pytest.raises(ValueError, match="reserved for independent evaluation"):
        check_allowed(origin)
    source = Source(origin, "0" * 40, "CT", "x", "images", "masks", "any", "manual")
    with pytest.raises(ValueError, match="reserved"):
        build([tmp_path], tmp_path / "pool", [source], shared_data=tmp_path)
    assert not (tmp_path / "pool").exists()
    check_allowed("github:sarah-antillia/Tensorflow-Image-Segmentation-Lung-Tumor")  # a different repository


def test_duplicates_of_reference_images_are_recognised_even_re_encoded():
    rng = np.random.default_rng(1)
    image = np.kron(rng.integers(0, 255, (16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    reference = Reference([image])
    assert reference.duplicate_of(image.copy()) == "identical"
    resized = np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR))
    assert reference.duplicate_of(resized) == "near-identical"
    assert reference.duplicate_of(255 - image) is None


def test_pool_is_refused_inside_the_repository(tmp_path):
    with pytest.raises(ValueError, match="inside the repository"):
        refuse_inside_repository(REPO_ROOT / "pool")
    refuse_inside_repository(tmp_path / "pool")


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=test", "-c", "user.email=test@example.invalid",
                    *args], check=True, capture_output=True)


def test_build_reads_a_pinned_snapshot_and_skips_shared_data_duplicates(tmp_path):
    """A real git repository with 3 image/mask pairs; one image is also a shared/data-like case."""
    work = tmp_path / "owner+toy"
    (work / "images").mkdir(parents=True)
    (work / "masks").mkdir()
    rng = np.random.default_rng(2)
    images = [np.kron(rng.integers(0, 255, (10, 10)), np.ones((10, 10))).astype(np.uint8) for _ in range(3)]
    for index, image in enumerate(images):
        Image.fromarray(image).save(work / "images" / f"case{index}.png")
        Image.fromarray(_two_blobs_and_a_speck()).save(work / "masks" / f"case{index}.png")
    Image.fromarray(images[0]).save(work / "images" / "flipped_case0.png")  # an augmented copy: not an original
    Image.fromarray(_two_blobs_and_a_speck()).save(work / "masks" / "flipped_case0.png")
    _git(work, "init", "-q")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "toy")
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    mirrors = tmp_path / "mirrors"
    (mirrors / "owner+toy").mkdir(parents=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(mirrors / "owner+toy" / "repo")], check=True)

    shared = tmp_path / "shared"
    write_case(shared, "2DBox_US_held-out", images[1], objects_from_mask(_two_blobs_and_a_speck()))
    source = Source("github:owner/toy", commit, "US", "toy", "images", "masks", "CC0 (test)", "manual")
    manifest = build([mirrors], tmp_path / "pool", [source], shared_data=shared)

    assert [c["case"] for c in manifest["cases"]] == ["2DBox_US_toy-case0", "2DBox_US_toy-case2"]
    assert [s["reason"] for s in manifest["skipped"]] == ["identical to an image of shared/data"]
    assert manifest["counts"] == {"US": 2}
    recorded = json.loads((tmp_path / "pool" / "manifest.json").read_text())
    assert recorded["cases"][0]["commit"] == commit and recorded["cases"][0]["licence"] == "CC0 (test)"
    assert "2DBox_US_toy-case2" in (tmp_path / "pool" / "MANIFEST.md").read_text()


def test_split_keeps_each_repository_on_one_side_where_the_modality_has_three():
    cases = [{"case": f"2DBox_CT_{repo}-{i}", "modality": "CT", "repository": repo}
             for repo, count in (("a", 5), ("b", 3), ("c", 2)) for i in range(count)]
    cases += [{"case": f"2DBox_XRay_solo-{i}", "modality": "XRay", "repository": "solo"} for i in range(40)]
    split = propose_split(cases, held_out=["2DBox_CT_shared-1"])
    assert [n for n in split["train"] if "_CT_" in n] == [f"2DBox_CT_a-{i}" for i in range(5)]
    assert [n for n in split["validation"] if "_CT_" in n] == [f"2DBox_CT_b-{i}" for i in range(3)]
    assert "2DBox_CT_shared-1" in split["test"] and "2DBox_CT_c-0" in split["test"]
    solo = {part: sum("_XRay_" in n for n in names) for part, names in split.items()}
    assert sum(solo.values()) == 40 and min(solo.values()) >= 3  # a lone source is split 60/20/20
    assert len({n for names in split.values() for n in names}) == 51  # no case in two splits
