"""The QAT data pipeline: layout discovery, case split, slice index, box-prompt samples, balanced sampler."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from qmedsam.preprocess import MODEL_SIZE, resized_shape, to_model_input

from training.datasets.cases import (
    BoxPromptDataset,
    ModalityBalancedSampler,
    SliceIndex,
    SourceFile,
    collate,
    discover,
    flip_valid_region,
    jitter_box,
    mask_bbox,
    nearest_resize,
    split_by_case,
    split_cases,
)

MODALITIES = {"CT", "Dermoscopy", "Endoscopy", "Fundus", "MR", "Mammography", "Microscope", "US", "XRay"}


@pytest.fixture(scope="module")
def real_files(shared_data):
    return discover([shared_data])


@pytest.fixture(scope="module")
def plain(real_files):
    return BoxPromptDataset(real_files, augment=False, seed=3)


@pytest.fixture(scope="module")
def augmented(real_files):
    return BoxPromptDataset(real_files, augment=True, max_jitter=10, seed=3)


def _raw(source: SourceFile, z: int) -> tuple:
    """The unprocessed image/slice and label map, read independently of the module under test."""
    image = np.load(source.image_path, allow_pickle=False)["imgs"]
    labels = np.load(source.label_path, allow_pickle=False)["gts"]
    return (image[z], labels[z]) if source.kind == "3D" else (image, labels)


def _write_challenge_tree(root: Path) -> None:
    volume = np.zeros((5, 40, 50), np.uint8)
    volume_gts = np.zeros((5, 40, 50), np.uint16)
    volume_gts[1, 5:10, 5:12] = 2
    volume_gts[3, 20:30, 10:20] = 7
    (root / "CT" / "ctorg").mkdir(parents=True)
    np.savez_compressed(root / "CT" / "ctorg" / "CT_ctorg_case1.npz", imgs=volume, gts=volume_gts)
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    labels[2:8, 3:9], labels[15:25, 20:35] = 1, 2
    (root / "Endoscopy" / "kvasir").mkdir(parents=True)
    np.savez_compressed(root / "Endoscopy" / "kvasir" / "polyp.npz", imgs=image, gts=labels)
    np.savez_compressed(root / "Endoscopy" / "kvasir" / "empty.npz", imgs=image, gts=np.zeros_like(labels))


# --------------------------------------------------------------------------------------------- discover


def test_discover_real_data(real_files, shared_data):
    assert len(real_files) == 16
    assert {f.modality for f in real_files} == MODALITIES
    assert real_files == discover([shared_data])  # deterministic
    for source in real_files:
        assert source.kind == source.case[:2]
        assert source.image_path.parent.name == "imgs" and source.label_path.parent.name == "gts"
        assert source.label_path.name == source.image_path.name
        gts = np.load(source.label_path, allow_pickle=False)["gts"]
        if source.kind == "3D":
            labelled = tuple(z for z in range(gts.shape[0]) if gts[z].any())
            assert source.slices == labelled and len(labelled) > 0
        else:
            assert source.slices == (0,)
    by_case = {f.case: f for f in real_files}
    assert by_case["2DBox_CT_sammed2d-amos000475"].dataset == "sammed2d"
    assert by_case["3DBox_MR_pyradiomics-brain1"].dataset == "pyradiomics"
    assert len(by_case["3DBox_CT_totalseg-examplect"].slices) == 30


def test_discover_challenge_layout(tmp_path):
    _write_challenge_tree(tmp_path)
    files = discover([tmp_path])
    assert [(f.case, f.modality, f.dataset, f.kind, f.slices) for f in files] == [
        ("CT_ctorg_case1", "CT", "ctorg", "3D", (1, 3)),
        ("polyp", "Endoscopy", "kvasir", "2D", (0,)),  # "empty" has no label: skipped
    ]
    assert all(f.label_path == f.image_path for f in files)


def test_discover_combines_layouts(tmp_path, shared_data):
    _write_challenge_tree(tmp_path)
    files = discover([shared_data, tmp_path])
    assert len(files) == 18
    assert files == sorted(files, key=lambda f: (f.modality, f.dataset, f.case))


def test_unknown_layout_is_refused_with_the_expected_layouts(tmp_path):
    np.savez_compressed(tmp_path / "loose.npz", imgs=np.zeros((4, 4), np.uint8), gts=np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"no \.npz cases in a known layout.*<Modality>/<dataset>.*imgs/\*\.npz"):
        discover([tmp_path])


def test_file_without_gts_is_refused_naming_it(tmp_path):
    folder = tmp_path / "US" / "hc18"
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "nolabel.npz", imgs=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"nolabel\.npz lacks 'gts'.*savez_compressed"):
        discover([tmp_path])


def test_shape_mismatch_is_refused(tmp_path):
    folder = tmp_path / "MR" / "brain"
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "bad.npz", imgs=np.zeros((3, 8, 8), np.uint8), gts=np.ones((3, 8, 9), np.uint8))
    with pytest.raises(ValueError, match=r"bad\.npz.*imgs \(3, 8, 8\) does not match gts \(3, 8, 9\)"):
        discover([tmp_path])


def test_evaluation_case_without_labels_is_refused(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "gts").mkdir()
    np.savez_compressed(tmp_path / "imgs" / "2DBox_US_x-1.npz", imgs=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"2DBox_US_x-1\.npz has no labels: expected .*gts"):
        discover([tmp_path])


# ---------------------------------------------------------------------------------------------- split


def _fake(case, modality, slices=(0,)):
    path = Path(f"{case}.npz")
    return SourceFile(case, modality, "d", "3D" if len(slices) > 1 else "2D", path, path, tuple(slices))


def test_split_by_case_real_data(real_files):
    train, validation = split_by_case(real_files, 0.2, seed=0)
    assert {f.case for f in train}.isdisjoint({f.case for f in validation})
    assert len(train) + len(validation) == len(real_files)
    counts = {}
    for source in real_files:
        counts.setdefault(source.modality, set()).add(source.case)
    for modality, cases in counts.items():
        in_validation = sum(f.modality == modality for f in validation)
        assert in_validation == (max(1, round(0.2 * len(cases))) if len(cases) >= 2 else 0), modality
    assert split_by_case(real_files, 0.2, seed=0) == (train, validation)


def test_split_file_never_hands_out_a_test_case(real_files, tmp_path):
    """training/configs/split.yaml: train and validation exclude test (shared/data's 16 cases all among it)."""
    import yaml

    from training.provenance import REPO_ROOT

    path = REPO_ROOT / "training" / "configs" / "split.yaml"
    test = set(yaml.safe_load(path.read_text())["test"])
    train, validation = split_cases(path, "train"), split_cases(path, "validation")
    assert train and validation and not (train | validation) & test and not train & validation
    assert {f.case for f in real_files} <= test
    with pytest.raises(ValueError, match="never handed"):
        split_cases(path, "test")
    leaky = tmp_path / "split.yaml"
    leaky.write_text("train: [a, b]\nvalidation: [c]\ntest: [b, d]\n")
    with pytest.raises(ValueError, match="both train and test"):
        split_cases(leaky, "train")
    assert split_cases(leaky, "validation") == {"c"}
    leaky.write_text("train: [a]\nvalidation: [c]\n")
    with pytest.raises(ValueError, match="needs case lists test"):
        split_cases(leaky, "train")


def test_split_keeps_every_slice_of_a_case_together_and_depends_on_the_seed():
    # A case split over two files (e.g. listed from two roots) must still land on one side.
    files = [_fake(f"ct{i}", "CT", range(5)) for i in range(20)] + [_fake("ct3", "CT", (7, 8))]
    files += [_fake(f"us{i}", "US") for i in range(10)] + [_fake("fundus", "Fundus")]
    train, validation = split_by_case(files, 0.2, seed=1)
    assert {f.case for f in train}.isdisjoint({f.case for f in validation})
    assert sum(f.modality == "CT" for f in validation) in (4, 5)  # 4 cases, one of them possibly ct3 twice
    assert len({f.case for f in validation if f.modality == "CT"}) == 4
    assert len([f for f in validation if f.modality == "US"]) == 2
    assert "fundus" in {f.case for f in train}
    assert {f.case for f in split_by_case(files, 0.2, seed=2)[1]} != {f.case for f in validation}
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_case(files, 1.0)


# ---------------------------------------------------------------------------------------------- index


def test_slice_index_agrees_with_brute_force():
    files = [_fake("a", "CT", (2, 3, 9)), _fake("b", "US"), _fake("c", "CT", ()), _fake("d", "MR", (0, 4))]
    index = SliceIndex(files)
    expanded = [(p, z) for p, f in enumerate(files) for z in f.slices]
    assert len(index) == len(expanded) == 6
    assert [index.locate(i) for i in range(len(index))] == expanded
    assert index.locate(np.int64(3)) == (1, 0)
    for bad in (-1, 6, 100):
        with pytest.raises(IndexError):
            index.locate(bad)
    by_modality = index.indices_by_modality()
    assert {m: ids.tolist() for m, ids in by_modality.items()} == {"CT": [0, 1, 2], "MR": [4, 5], "US": [3]}
    assert [index.modality_of(i) for i in range(6)] == ["CT", "CT", "CT", "US", "MR", "MR"]


def test_slice_index_on_real_data(real_files):
    index = SliceIndex(real_files)
    expanded = [(p, z) for p, f in enumerate(real_files) for z in f.slices]
    assert [index.locate(i) for i in range(len(index))] == expanded
    with pytest.raises(IndexError):
        index.locate(len(expanded))


# ------------------------------------------------------------------------------------------- geometry


def test_nearest_resize_follows_the_opencv_index_rule():
    labels = np.arange(35).reshape(5, 7)
    # rows floor(i * 5 / 3) = 0, 1, 3; columns floor(j * 7 / 4) = 0, 1, 3, 5
    expected = np.array([[0, 1, 3, 5], [7, 8, 10, 12], [21, 22, 24, 26]])
    np.testing.assert_array_equal(nearest_resize(labels, 3, 4), expected)
    # enlarging repeats: rows floor(i * 2 / 5) = 0, 0, 0, 1, 1
    np.testing.assert_array_equal(nearest_resize(np.array([[1], [2]]), 5, 1)[:, 0], [1, 1, 1, 2, 2])


def test_nearest_resize_matches_opencv_on_the_real_shapes():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for shape in [(181, 258), (450, 600), (529, 622), (584, 565), (540, 800), (631, 790), (101, 122), (91, 117)]:
        labels = rng.integers(0, 255, shape, dtype=np.uint8)
        height, width = resized_shape(*shape)
        expected = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(nearest_resize(labels, height, width), expected)


def test_flip_valid_region_keeps_the_padding_in_place():
    array = np.zeros((2, 4, 5), np.float32)
    array[:, :3, :4] = np.arange(12).reshape(3, 4)
    both = flip_valid_region(array, (3, 4), horizontal=True, vertical=True)
    np.testing.assert_array_equal(both[0, :3, :4], np.arange(12).reshape(3, 4)[::-1, ::-1])
    assert not both[:, 3:].any() and not both[:, :, 4:].any()
    np.testing.assert_array_equal(flip_valid_region(array, (3, 4), True, False)[1, 0, :4], [3, 2, 1, 0])
    np.testing.assert_array_equal(flip_valid_region(array, (3, 4), False, False), array)


# -------------------------------------------------------------------------------------------- samples


def test_unaugmented_samples_are_the_official_input_with_exact_boxes(plain, real_files):
    for index in range(len(plain)):
        sample = plain[index]
        position, z = plain.index.locate(index)
        source = real_files[position]
        image, labels = _raw(source, z)
        expected_input, (height, width) = to_model_input(image)
        assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, MODEL_SIZE, MODEL_SIZE)
        np.testing.assert_array_equal(sample["image"].numpy(), expected_input[0])
        mask = sample["mask"].numpy()
        assert mask.shape == (1, MODEL_SIZE, MODEL_SIZE) and set(np.unique(mask)) == {0.0, 1.0}
        assert not mask[0, height:].any() and not mask[0, :, width:].any()
        expected_mask = nearest_resize(labels, height, width) == sample["label"]
        np.testing.assert_array_equal(mask[0, :height, :width], expected_mask)
        assert sample["label"] in np.unique(labels[labels > 0])
        np.testing.assert_array_equal(sample["box"].numpy(), mask_bbox(mask[0] > 0))
        assert (sample["case"], sample["slice"], sample["modality"]) == (source.case, z, source.modality)


def test_augmented_boxes_grow_outward_within_the_jitter(augmented):
    grown = 0
    for epoch in (0, 1):
        augmented.set_epoch(epoch)
        for index in range(len(augmented)):
            sample = augmented[index]
            tight = mask_bbox(sample["mask"][0].numpy() > 0)
            box = sample["box"].numpy()
            assert box.min() >= 0 and box.max() <= MODEL_SIZE - 1  # inclusive pixel indices
            outward = np.concatenate([tight[:2] - box[:2], box[2:] - tight[2:]])
            assert outward.min() >= 0 and outward.max() <= 10
            grown += int(outward.sum() > 0)
    assert grown > len(augmented)  # jitter actually happens


def test_jitter_stops_at_the_last_pixel_of_the_frame():
    """LiteMedSAM's training clips a jittered side to W - 1 = 255, the last pixel index, not 256."""
    edge = np.array([0, 0, MODEL_SIZE - 1, MODEL_SIZE - 1])
    for seed in range(5):
        np.testing.assert_array_equal(jitter_box(edge, np.random.default_rng(seed), 10), edge)
    inner = jitter_box(np.array([100, 100, 120, 120]), np.random.default_rng(0), 10)
    assert (inner[:2] <= 100).all() and (inner[2:] >= 120).all() and inner.max() <= 130


def test_flipped_sample_is_the_flipped_unflipped_sample(plain, augmented):
    seen = set()
    for epoch in range(6):
        plain.set_epoch(epoch)
        augmented.set_epoch(epoch)
        for index in (0, 13, 40, 68):  # 3D CT, 3D CT (anisotropic grid), 3D MR, 2D Microscope
            reference, sample = plain[index], augmented[index]
            assert sample["label"] == reference["label"]  # label drawn before the flips
            hw = resized_shape(*_raw(augmented.files[augmented.index.locate(index)[0]], reference["slice"])[1].shape)
            matches = [(h, v) for h in (False, True) for v in (False, True)
                       if torch.equal(torch.from_numpy(flip_valid_region(reference["mask"].numpy(), hw, h, v)),
                                      sample["mask"])
                       and torch.equal(torch.from_numpy(flip_valid_region(reference["image"].numpy(), hw, h, v)),
                                       sample["image"])]
            assert matches, (epoch, index)
            seen.update(matches)
    assert {(True, False), (False, True), (True, True)} <= seen


def test_samples_depend_only_on_seed_epoch_and_index(real_files, augmented):
    other = BoxPromptDataset(real_files, augment=True, max_jitter=10, seed=3, cache_files=1)
    microscope = next(i for i in range(len(augmented)) if augmented.index.modality_of(i) == "Microscope")
    augmented.set_epoch(5)
    other.set_epoch(5)
    for index in (microscope, 50, 1):  # read in another order through a different cache
        first, second = augmented[index], other[index]
        assert first["label"] == second["label"] and torch.equal(first["box"], second["box"])
        assert torch.equal(first["mask"], second["mask"]) and torch.equal(first["image"], second["image"])
    labels, boxes = set(), set()
    for epoch in range(4):
        augmented.set_epoch(epoch)
        sample = augmented[microscope]  # 125 nuclei: the label and box change with the epoch
        labels.add(sample["label"])
        boxes.add(tuple(sample["box"].tolist()))
    assert len(labels) > 1 and len(boxes) > 1
    reseeded = BoxPromptDataset(real_files, seed=4)
    assert [reseeded[i]["label"] for i in (microscope, 6)] != [augmented[i]["label"] for i in (microscope, 6)]


def test_object_lost_by_the_resize_falls_back_to_the_pixels_it_covers(tmp_path):
    folder = tmp_path / "Microscope" / "dots"
    folder.mkdir(parents=True)
    labels = np.zeros((1024, 1024), np.uint8)
    labels[5, 7] = 4  # nearest picks rows/columns 0, 4, 8, ...: this pixel vanishes
    np.savez_compressed(folder / "dot.npz", imgs=np.zeros((1024, 1024), np.uint8), gts=labels)
    sample = BoxPromptDataset(discover([tmp_path]), augment=False)[0]
    assert sample["label"] == 4
    assert sample["mask"].sum() == 1 and sample["mask"][0, 1, 1] == 1
    assert sample["box"].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert sample["image"].shape == (3, MODEL_SIZE, MODEL_SIZE)  # grey input repeated to 3 channels


def test_unlabelled_slice_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "CT" / "x"
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "v.npz", imgs=np.zeros((2, 8, 8), np.uint8), gts=np.zeros((2, 8, 8), np.uint8))
    path = folder / "v.npz"
    dataset = BoxPromptDataset([SourceFile("v", "CT", "x", "3D", path, path, (1,))], augment=False)
    with pytest.raises(ValueError, match="v slice 1: no labelled pixels"):
        dataset[0]


def test_cache_is_bounded_and_not_pickled(real_files):
    dataset = BoxPromptDataset(real_files, augment=False, cache_files=2)
    for index in (0, 1, 3, 4):  # three files
        dataset[index]
    assert len(dataset._cache) == 2
    assert len(pickle.loads(pickle.dumps(dataset))._cache) == 0
    assert len(pickle.dumps(dataset)) < 100_000


# -------------------------------------------------------------------------------------------- sampler


def _modality_counts(index, indices):
    counts = {}
    for i in indices:
        counts[index.modality_of(i)] = counts.get(index.modality_of(i), 0) + 1
    return counts


def test_min_rule_draws_the_smallest_modality_count_fresh_each_epoch():
    files = [_fake(f"ct{i}", "CT", range(10)) for i in range(3)] + [_fake(f"us{i}", "US") for i in range(4)]
    files += [_fake(f"mr{i}", "MR", range(7)) for i in range(2)]
    index = SliceIndex(files)
    sampler = ModalityBalancedSampler(index, "min", seed=1, num_replicas=1, rank=0)
    draws = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 12
        assert _modality_counts(index, drawn) == {"CT": 4, "US": 4, "MR": 4}
        assert len(set(drawn)) == 12  # without replacement
        draws.append(drawn)
    assert draws[0] != draws[1] != draws[2]
    sampler.set_epoch(1)
    assert list(sampler) == draws[1]


def test_tenth_rule_takes_a_tenth_of_large_modalities():
    files = [_fake(f"ct{i}", "CT", range(50)) for i in range(5)] + [_fake(f"us{i}", "US") for i in range(12)]
    files += [_fake(f"mr{i}", "MR", range(20)) for i in range(2)]
    index = SliceIndex(files)
    sampler = ModalityBalancedSampler(index, "tenth", seed=0, num_replicas=1, rank=0)
    # N_m = 250, 12, 40: max(N_m // 10, 12) = 25, 12, 12
    assert _modality_counts(index, sampler) == {"CT": 25, "US": 12, "MR": 12}
    assert len(sampler) == 49


def test_fixed_count_per_modality_draws_with_replacement_when_short():
    files = [_fake(f"ct{i}", "CT", range(50)) for i in range(2)] + [_fake("us0", "US")]
    index = SliceIndex(files)
    sampler = ModalityBalancedSampler(index, 6, seed=0, num_replicas=1, rank=0)
    drawn = list(sampler)
    assert _modality_counts(index, drawn) == {"CT": 6, "US": 6}
    assert len(set(i for i in drawn if index.modality_of(i) == "US")) == 1  # one US sample, repeated
    with pytest.raises(ValueError, match="positive number"):
        ModalityBalancedSampler(index, 0)


def test_tenth_rule_on_real_data(real_files):
    index = SliceIndex(real_files)
    sampler = ModalityBalancedSampler(index, "tenth", num_replicas=1, rank=0)
    counts = _modality_counts(index, sampler)
    assert counts == {"CT": 3, "MR": 2, **{m: 1 for m in MODALITIES - {"CT", "MR"}}}
    assert len(ModalityBalancedSampler(index, "min", num_replicas=1, rank=0)) == len(MODALITIES)
    with pytest.raises(ValueError, match="per_modality"):
        ModalityBalancedSampler(index, "all")


def test_ranks_get_disjoint_equal_shards_covering_the_draw(real_files):
    index = SliceIndex(real_files)
    shards = [ModalityBalancedSampler(index, "min", seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        for sampler in shards:
            sampler.set_epoch(epoch)
        draw = shards[0].epoch_draw().tolist()
        first, second = list(shards[0]), list(shards[1])
        assert len(draw) == 9 and len(first) == len(second) == len(shards[0]) == 5
        padded = draw + draw[:1]  # 9 samples padded to 10 by repeating the start
        assert padded[0::2] == first and padded[1::2] == second  # disjoint positions, union = the draw
    single = ModalityBalancedSampler(index, "min", seed=7, num_replicas=1, rank=0)
    single.set_epoch(1)
    assert list(single) == shards[0].epoch_draw().tolist()


def test_dataloader_batches_with_collate(real_files):
    dataset = BoxPromptDataset(real_files, seed=1)
    sampler = ModalityBalancedSampler(dataset.index, "min", seed=1, num_replicas=1, rank=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, MODEL_SIZE, MODEL_SIZE) and batch["mask"].shape == (4, 1, 256, 256)
    assert batch["box"].shape == (4, 4) and batch["box"].dtype == torch.float32
    assert len(batch["case"]) == len(batch["label"]) == len(batch["slice"]) == len(batch["modality"]) == 4
    assert len(set(batch["modality"])) == 4  # one draw per modality, so four distinct modalities


def test_the_default_data_folder_is_the_tests_shared_data():
    """conftest names ../shared/data without importing torch; it must stay training.datasets.cases's one default."""
    from conftest import SHARED_DATA

    from training.datasets.cases import DEFAULT_DATA

    assert SHARED_DATA.resolve() == DEFAULT_DATA


def test_a_pickled_training_file_is_refused_not_loaded(tmp_path):
    folder = tmp_path / "US" / "hc18"
    folder.mkdir(parents=True)
    np.savez(folder / "evil.npz", imgs=np.zeros((8, 8, 3), np.uint8), gts=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"evil\.npz: array 'gts' holds Python objects.*refused"):
        discover([tmp_path])
    (folder / "evil.npz").unlink()
    (folder / ".qmedsam-1234.partial.npz").write_bytes(b"half a file")  # hidden partial writes are not cases
    np.savez_compressed(folder / "ok.npz", imgs=np.zeros((8, 8, 3), np.uint8), gts=np.eye(8, dtype=np.uint8))
    assert [f.case for f in discover([tmp_path])] == ["ok"]
