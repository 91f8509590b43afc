"""Reading cases, volumes and boxes and writing results: bad input is a QMedSAMError, nothing half-written."""

import io
import os
import zipfile

import numpy as np
import pytest
from conftest import case_names
from qmedsam.atomic import atomic_write, check_writable_target
from qmedsam.errors import QMedSAMError
from qmedsam.intensity import to_uint8
from qmedsam.npz_io import find_npz_inputs, load_npz_case, save_segs_npz

RGB = np.zeros((8, 10, 3), np.uint8)
VOLUME = np.zeros((4, 8, 10), np.uint8)
BOX_2D = np.array([[1, 1, 5, 5]])
BOX_3D = np.array([[1, 1, 0, 5, 5, 3]])


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _object_array():
    array = np.empty(2, dtype=object)
    array[:] = [np.zeros(3), "text"]
    return array


BAD_CASES = {
    "missing file": (None, "does not exist"),
    "folder": ("folder", "is a folder"),
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 300, np.uint8)), "not a .npz \\(zip\\)"),
    "empty file": (b"", "not a .npz \\(zip\\)"),
    "truncated zip": (_npz_bytes(imgs=RGB, boxes=BOX_2D)[:200], "damaged or not a valid .npz"),
    "npy not npz": ("npy", "single-array .npy"),
    "pickled imgs": (_npz_bytes(imgs=_object_array(), boxes=BOX_2D), "'imgs' holds Python objects"),
    "pickled boxes": (_npz_bytes(imgs=RGB, boxes=np.array([[1, 1, 5, 5]], dtype=object)), "unpickling"),
    "no imgs": (_npz_bytes(image=RGB, boxes=BOX_2D), "lacks 'imgs' \\(keys found: 'image', 'boxes'\\)"),
    "no boxes": (_npz_bytes(imgs=RGB), "lacks 'boxes' \\(keys found: 'imgs'\\)"),
    "empty npz": (_npz_bytes(), "keys found: none"),
    "volume with 2D boxes": (_npz_bytes(imgs=VOLUME, boxes=BOX_2D), "volume .* 4 columns \\(2D boxes\\)"),
    "RGB with 3D boxes": (_npz_bytes(imgs=RGB, boxes=BOX_3D), "2D image .* 6 columns \\(3D boxes\\)"),
    "grey with 3D boxes": (_npz_bytes(imgs=RGB[..., 0], boxes=BOX_3D), "2D image"),
    "boxes width 5": (_npz_bytes(imgs=RGB, boxes=np.ones((1, 5))), "shape \\(1, 5\\); expected \\(N, 4\\)"),
    "no boxes in array": (_npz_bytes(imgs=RGB, boxes=np.zeros((0, 4))), "'boxes' is empty"),
    "4D image": (_npz_bytes(imgs=np.zeros((2, 8, 8, 3)), boxes=BOX_2D), "shape \\(2, 8, 8, 3\\)"),
    "NaN image": (_npz_bytes(imgs=np.full((8, 8), np.nan), boxes=BOX_2D), "64 non-finite pixels"),
    "string image": (_npz_bytes(imgs=np.full((8, 8), "a"), boxes=BOX_2D), "not text"),
    "box outside": (_npz_bytes(imgs=RGB, boxes=[[20, 20, 30, 30]]), "case.npz: Box 0 \\(label 1\\).*outside"),
    "bad spacing": (_npz_bytes(imgs=VOLUME, boxes=BOX_3D, spacing=[1.0, np.nan, 1.0]), "'spacing'"),
}


@pytest.mark.parametrize("content, phrase", BAD_CASES.values(), ids=BAD_CASES.keys())
def test_bad_case_file_is_refused(tmp_path, content, phrase):
    path = tmp_path / "case.npz"
    if content == "folder":
        path.mkdir()
    elif content == "npy":
        np.save(path.with_suffix(".npy"), RGB)
        path.with_suffix(".npy").rename(path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(QMedSAMError, match=phrase):
        load_npz_case(path)


def test_small_cases_load(tmp_path):
    (tmp_path / "grey.npz").write_bytes(_npz_bytes(imgs=np.full((6, 7), 3.5), boxes=[[-2, 1, 4, 9]]))
    case = load_npz_case(tmp_path / "grey.npz")
    assert (case.name, case.kind, case.image.shape, case.spacing) == ("grey", "2D", (6, 7, 3), None)
    np.testing.assert_array_equal(case.boxes, [[0, 1, 4, 5]])
    (tmp_path / "vol.npz").write_bytes(_npz_bytes(imgs=VOLUME, boxes=BOX_3D, spacing=[0.5, 0.5, 2]))
    case = load_npz_case(tmp_path / "vol.npz")
    assert (case.kind, case.image.shape, case.spacing) == ("3D", (4, 8, 10), (0.5, 0.5, 2.0))
    assert case.boxes.dtype == np.float64


def test_every_shared_case_loads_and_validates(shared_data):
    names = case_names()
    assert len(names) == 16
    for name in names:
        case = load_npz_case(shared_data / "imgs" / f"{name}.npz")
        raw = np.load(shared_data / "imgs" / f"{name}.npz", allow_pickle=False)
        truth = np.load(shared_data / "gts" / f"{name}.npz", allow_pickle=False)["gts"]
        assert case.name == name and case.kind == name[:2]
        assert case.image.shape == (truth.shape if case.kind == "3D" else (*truth.shape, 3))
        np.testing.assert_array_equal(case.boxes, raw["boxes"])  # the real boxes need no clipping
        assert len(case.boxes) >= truth.max()
        assert (case.spacing is not None) == (case.kind == "3D")


# -- writing -------------------------------------------------------------------------------------------

def test_segs_round_trip_and_overwrite(tmp_path):
    path = tmp_path / "case.npz"
    save_segs_npz(path, np.ones((4, 5), np.uint8))
    with pytest.raises(QMedSAMError, match="already exists; pass --overwrite"):
        save_segs_npz(path, np.zeros((4, 5), np.uint8))
    np.testing.assert_array_equal(np.load(path, allow_pickle=False)["segs"], 1)
    save_segs_npz(path, np.full((4, 5), 2, np.uint8), overwrite=True)
    with np.load(path, allow_pickle=False) as data:
        assert data.files == ["segs"] and data["segs"].dtype == np.uint8 and (data["segs"] == 2).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


BAD_TARGETS = {
    "under a regular file": ("file/out.npz", "is a file, not a folder"),
    "missing folder": ("missing/out.npz", "does not exist; create it"),
    "target is a folder": ("folder", "is a folder; give a file name"),
    "existing file": ("file", "already exists; pass --overwrite"),
}


@pytest.mark.parametrize("relative, phrase", BAD_TARGETS.values(), ids=BAD_TARGETS.keys())
def test_unwritable_output_is_refused(tmp_path, relative, phrase):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(QMedSAMError, match=phrase):
        save_segs_npz(tmp_path / relative, np.zeros((2, 2), np.uint8))
    with pytest.raises(QMedSAMError, match=phrase):
        check_writable_target(tmp_path / relative, overwrite=False)
    assert (tmp_path / "file").read_bytes() == b"x"


def test_segs_must_be_uint8(tmp_path):
    with pytest.raises(QMedSAMError, match="expected uint8"):
        save_segs_npz(tmp_path / "x.npz", np.zeros((2, 2), np.int64))


def test_failed_write_leaves_target_and_folder_untouched(tmp_path):
    target = tmp_path / "labels.nii.gz"
    target.write_bytes(b"old")
    seen = []

    def failing_writer(temp):
        seen.append(temp)
        temp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(QMedSAMError, match="No space left on device"):
        atomic_write(target, failing_writer, overwrite=True)
    assert seen[0].name.endswith(".labels.nii.gz") and seen[0].parent == tmp_path
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]


# -- finding inputs ------------------------------------------------------------------------------------

def test_find_npz_inputs(tmp_path):
    for name in ["b.npz", "a.npz", ".qmedsam-1234.c.npz", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    single = tmp_path / "b.npz"
    assert find_npz_inputs([tmp_path, single]) == [tmp_path / "a.npz", tmp_path / "b.npz"]
    assert find_npz_inputs(str(single)) == [single]


BAD_INPUTS = {
    "missing": ("missing.npz", "does not exist"),
    "empty folder": ("empty", "holds no .npz files"),
    "not npz": ("notes.txt", "is not a .npz file"),
    "nothing": (None, "No .npz inputs given"),
}


@pytest.mark.parametrize("relative, phrase", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_are_refused(tmp_path, relative, phrase):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(QMedSAMError, match=phrase):
        find_npz_inputs([] if relative is None else [tmp_path / relative])


# -- intensities (volumes and boxes: test_volume_io.py) ------------------------------------------------

def test_to_uint8_window_and_percentile_rules():
    ct = np.array([[[-1000, -160, 40, 240, 3000]]], np.int16)
    np.testing.assert_array_equal(to_uint8(ct, window=(40, 400)), [[[0, 0, 127, 255, 255]]])
    mr = np.concatenate([np.zeros(10), np.linspace(1, 1000, 1000)]).reshape(1, 10, 101)
    result = to_uint8(mr)
    assert result.dtype == np.uint8 and (result.ravel()[:10] == 0).all()
    assert result.max() == 255 and result.ravel()[10] == 0 and (result.ravel()[-5:] == 255).all()
    already = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert to_uint8(already) is already


@pytest.mark.parametrize("window", [None, (40, 400)])
@pytest.mark.parametrize("value", [0.0, 123.0])
def test_to_uint8_constant_volume_gives_zeros(window, value):
    result = to_uint8(np.full((2, 3, 4), value), window=window)
    assert result.dtype == np.uint8 and result.shape == (2, 3, 4)
    if window is None:
        assert not result.any()


def test_to_uint8_refuses_a_bad_window():
    with pytest.raises(QMedSAMError, match="positive width"):
        to_uint8(np.zeros((1, 2, 2), np.float32), window=(40, 0))


def test_zip_without_npy_members_is_refused(tmp_path):
    path = tmp_path / "case.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("imgs.npy", b"not an npy header")
        archive.writestr("boxes.npy", b"nor this")
    with pytest.raises(QMedSAMError, match="'imgs' is not a numpy array"):
        load_npz_case(path)


def test_overlay_gives_neighbouring_labels_distinct_colours(tmp_path):
    """Two lesions (labels 1 and 2) used to get two near-identical blues (tab20's first pair)."""
    from matplotlib.image import imread
    from qmedsam.overlay import LABEL_ALPHA, label_colours, write_overlay_png

    colours = label_colours(18)
    assert np.abs(colours[0] - colours[1]).sum() > 0.6  # blue and orange
    assert len({tuple(c) for c in colours}) == 18 and np.ptp(colours, axis=1).min() > 0.1  # distinct, no grey
    image = np.full((64, 64), 128, np.uint8)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30], labels[34:54, 34:54] = 1, 2
    path = tmp_path / "overlay.png"
    write_overlay_png(path, image, labels)
    pixels = imread(path)[..., :3].reshape(-1, 3)
    for colour in colours[:2]:  # each label's tint over the grey image is in the picture
        blended = LABEL_ALPHA * colour + (1 - LABEL_ALPHA) * 128 / 255
        assert (np.abs(pixels - blended).max(axis=1) < 0.02).sum() > 100
