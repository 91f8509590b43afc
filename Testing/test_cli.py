"""The `qmedsam` command end to end: real cases in, challenge outputs and label images out, errors as exit 2."""

import json
import re
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from qmedsam.cli import main
from qmedsam.engine import segment_case
from qmedsam.intensity import to_uint8
from qmedsam.npz_io import load_npz_case

CASE_2D = "2DBox_Endoscopy_kvasir-cju0roawvklr"
CASE_3D = "3DBox_CT_pyradiomics-lung1"


@pytest.fixture
def inputs(tmp_path, shared_data):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in (CASE_2D, CASE_3D):
        shutil.copy(shared_data / "imgs" / f"{name}.npz", folder)
    return folder


def test_segment_folder_then_evaluate(inputs, tmp_path, shared_data, capsys, segmenter):
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "-o", str(out), "--threads", "2", "-q"]) == 0
    for name in (CASE_2D, CASE_3D):
        with np.load(out / f"{name}.npz", allow_pickle=False) as result:
            segs = result["segs"]
        case = load_npz_case(inputs / f"{name}.npz")
        assert segs.dtype == np.uint8
        # exactly the engine's masks for the same case and the same (default) model
        np.testing.assert_array_equal(segs, segment_case(segmenter, case.kind, case.image, case.boxes))
    gts = tmp_path / "gts"
    gts.mkdir()
    for name in (CASE_2D, CASE_3D):
        shutil.copy(shared_data / "gts" / f"{name}.npz", gts)
    capsys.readouterr()
    assert main(["evaluate", str(out), str(gts), "-o", str(tmp_path / "report")]) == 0
    table = capsys.readouterr().out
    assert "| Endoscopy | 1 |" in table and "| CT | 1 |" in table
    with open(tmp_path / "report" / "cases.csv") as report:
        rows = {line.split(",")[0]: line.strip().split(",") for line in report.readlines()[1:]}
    assert {name: rows[name][-1] for name in (CASE_2D, CASE_3D)} == {CASE_2D: "ok", CASE_3D: "ok"}
    assert float(rows[CASE_2D][3]) > 0.8  # the shipped model segments the polyp


def test_progress_counts_slices_only_where_there_are_some(inputs, tmp_path, capsys):
    assert main(["segment", str(inputs / f"{CASE_2D}.npz"), "-o", str(tmp_path / "out"), "--threads", "2"]) == 0
    captured = capsys.readouterr()
    assert "slice" not in captured.err  # a 2D image has no slices to count (the bar used to read "0slice")
    assert f"{CASE_2D}.npz: 2 box(es)" in captured.out
    assert main(["segment", str(inputs / f"{CASE_3D}.npz"), "-o", str(tmp_path / "out"), "--threads", "2"]) == 0
    captured = capsys.readouterr()
    # Opened with its total (3 slices); the last refresh may be skipped by tqdm's rate limit, the first never is.
    # A count of zero ("0slice [", the old bug) must not appear; rates such as "10.90slice/s" may.
    assert not re.search(r"(?<![\d.])0slice", captured.err) and "0/3 [" in captured.err


def test_existing_output_is_not_overwritten(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{CASE_2D}.npz"
    existing.write_bytes(b"the user's file")
    assert main(["segment", str(inputs / f"{CASE_2D}.npz"), "-o", str(out), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"the user's file"
    assert main(["segment", str(inputs / f"{CASE_2D}.npz"), "-o", str(out), "-q", "--overwrite"]) == 0
    assert existing.read_bytes() != b"the user's file"


def test_one_bad_input_means_nothing_is_written(inputs, tmp_path, capsys):
    (inputs / "broken.npz").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    assert main(["segment", str(inputs), "-o", str(out), "-q"]) == 2
    assert "broken.npz" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args,phrase", [
    (["segment", "missing.npz", "-o", "OUT"], "missing.npz"),
    (["segment", "IN", "-o", "OUT", "--model", "nope"], "Unknown model"),
    (["segment", "IN", "-o", "OUT", "--threads", "0"], "threads"),
    (["segment", "IN", "-o", "FILE/sub"], "FILE"),
    (["evaluate", "missing-segs", "missing-gts"], "missing-segs"),
])
def test_user_errors_exit_2_with_a_message(args, phrase, inputs, tmp_path, capsys):
    (tmp_path / "FILE").write_text("a regular file where a folder is expected")
    replace = {"IN": str(inputs / f"{CASE_2D}.npz"), "OUT": str(tmp_path / "out"),
               "FILE/sub": str(tmp_path / "FILE" / "sub")}
    args = [replace.get(a, a) for a in args]
    assert main(args) == 2
    assert phrase in capsys.readouterr().err


@pytest.mark.parametrize("spacing", [[0.7, 0.7, 0.0], [0.7, -0.7, 5.0], [0.7, np.nan, 5.0]])
def test_3d_case_with_bad_spacing_is_refused(spacing, tmp_path, shared_data, capsys):
    with np.load(shared_data / "imgs" / f"{CASE_3D}.npz", allow_pickle=False) as case:
        arrays = {key: case[key] for key in case.files}
    arrays["spacing"] = np.array(spacing)
    path = tmp_path / f"{CASE_3D}.npz"
    np.savez_compressed(path, **arrays)
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(path) in error and "'spacing'" in error
    assert not out.exists() or not any(out.iterdir())


def test_volume_with_physical_boxes_keeps_geometry(tmp_path, shared_data, segmenter):
    with np.load(shared_data / "imgs" / f"{CASE_3D}.npz", allow_pickle=False) as case:
        volume, box = case["imgs"], case["boxes"][0]
    image = sitk.GetImageFromArray(volume.astype(np.int16) * 4 - 500)  # a CT-like, non-uint8 volume
    image.SetSpacing((0.57, 0.57, 5.0))
    image.SetOrigin((-150.0, 20.0, -300.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    low = image.TransformIndexToPhysicalPoint([int(v) for v in box[:3]])
    high = image.TransformIndexToPhysicalPoint([int(v) for v in box[3:]])
    boxes = tmp_path / "ct.boxes.json"
    boxes.write_text(json.dumps({"coordinates": "physical", "boxes": [{"min": low, "max": high, "name": "tumour"}]}))
    out = tmp_path / "out"
    assert main(["segment", str(path), "-o", str(out), "-q", "--overlay", "--threads", "2"]) == 0
    labels = sitk.ReadImage(str(out / "ct_labels.nii.gz"))
    assert labels.GetSpacing() == pytest.approx(image.GetSpacing())
    assert labels.GetOrigin() == pytest.approx(image.GetOrigin())
    assert labels.GetDirection() == pytest.approx(image.GetDirection())
    array = sitk.GetArrayFromImage(labels)
    # the physical box found the voxels it was made from: the engine's masks for the voxel box, exactly
    expected = segment_case(segmenter, "3D", to_uint8(sitk.GetArrayFromImage(image)), box[None])
    np.testing.assert_array_equal(array, expected)
    assert (out / "ct_overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_volume_without_boxes_is_refused(tmp_path):
    path = tmp_path / "mr.nii.gz"
    sitk.WriteImage(sitk.Image(32, 32, 4, sitk.sitkInt16), str(path))
    assert main(["segment", str(path), "-o", str(tmp_path / "out")]) == 2


def test_models_lists_the_catalogue(capsys):
    assert main(["models"]) == 0
    assert "litemedsam-fp32" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_every_option_has_help_with_its_default(command):
    from qmedsam.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command")
    for action in commands.choices[command]._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings or action.metavar} has no help"
        if action.option_strings and not action.required:
            assert "default" in action.help, f"{command} {action.option_strings} does not say its default"
