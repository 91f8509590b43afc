"""`qmedsam evaluate` on the real ground truths of ../shared/data (read only) and on broken inputs."""

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from qmedsam import evaluate as ev
from qmedsam.errors import QMedSAMError
from scipy import ndimage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ANISOTROPIC_CASE = "3DBox_MR_pyradiomics-brain1"  # 6.5 mm slices, 0.78 mm pixels


def _gts(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return data["gts"]


def _save_predictions(gts_dir: Path, segs_dir: Path, names=None) -> Path:
    segs_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(gts_dir.glob("*.npz")):
        if names is None or path.stem in names:
            np.savez_compressed(segs_dir / path.name, segs=_gts(path))
    return segs_dir


def _copy_gts(shared_data: Path, folder: Path, names) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(shared_data / "gts" / f"{name}.npz", folder)
    return folder


def _read_csv(path: Path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _small_case(folder: Path, name="2DBox_CT_small", shape=(16, 16)) -> Path:
    """A tiny 2D ground truth and its perfect prediction, for the error tests."""
    gts = np.zeros(shape, np.uint8)
    gts[4:10, 4:10] = 1
    (folder / "gts").mkdir(parents=True, exist_ok=True)
    (folder / "segs").mkdir(parents=True, exist_ok=True)
    np.savez(folder / "gts" / f"{name}.npz", gts=gts)
    np.savez(folder / "segs" / f"{name}.npz", segs=gts)
    return folder


@pytest.fixture(scope="module")
def self_run(shared_data, tmp_path_factory):
    """Ground truth evaluated against itself, once for the module."""
    segs = _save_predictions(shared_data / "gts", tmp_path_factory.mktemp("self") / "segs")
    results = ev.evaluate(segs, shared_data / "gts", progress=False)
    return segs / "evaluation", results


def test_modality_from_name():
    assert ev.modality_of("2DBox_Dermoscopy_ham10000-ISIC0024311") == "Dermoscopy"
    assert ev.modality_of("3DBox_MR_totalseg-examplemr") == "MR"
    assert ev.modality_of("my_case") == "unknown"


def test_self_evaluation_is_perfect(self_run, shared_data):
    _, results = self_run
    assert sorted(r.case for r in results) == sorted(p.stem for p in (shared_data / "gts").glob("*.npz"))
    for result in results:
        assert result.scores, result.case
        assert result.dsc == 1.0 and result.nsd == pytest.approx(1.0), result.case
    assert {r.modality for r in results} >= {"CT", "MR", "Microscope", "XRay"}


def test_output_files(self_run, shared_data):
    out, results = self_run
    rows = _read_csv(out / "metrics.csv")
    assert list(rows[0]) == ["case", "modality", "label", "dsc", "nsd"]
    assert len(rows) == sum(len(r.scores) for r in results)
    assert all(float(row["dsc"]) == 1.0 and float(row["nsd"]) == pytest.approx(1.0) for row in rows)
    microscope = [row for row in rows if row["case"] == "2DBox_Microscope_dsb2018-stardist"]
    assert [int(row["label"]) for row in microscope] == list(range(1, 126))

    cases = _read_csv(out / "cases.csv")
    assert len(cases) == len(results) and {row["prediction"] for row in cases} == {"ok"}

    summary = (out / "summary.md").read_text()
    assert "| modality | cases | mean DSC | mean NSD |" in summary
    assert "| CT | 4 | 1.0000 | 1.0000 |" in summary
    assert f"| **all (mean over cases)** | {len(results)} | 1.0000 | 1.0000 |" in summary
    assert (out / "dsc_nsd.png").read_bytes().startswith(PNG_SIGNATURE)
    assert not list(out.glob(".*.tmp"))


def test_perturbed_label_lowers_only_its_case(shared_data, tmp_path):
    names = ["2DBox_XRay_covidseg-ARDSSevere", "2DBox_US_hc18-000", "3DBox_CT_totalseg-examplect"]
    gts_dir = _copy_gts(shared_data, tmp_path / "gts", names)
    segs_dir = _save_predictions(gts_dir, tmp_path / "segs")
    segs = _gts(gts_dir / f"{names[0]}.npz")
    eroded = ndimage.binary_erosion(segs == 2, iterations=8)
    segs[(segs == 2) & ~eroded] = 0
    np.savez_compressed(segs_dir / f"{names[0]}.npz", segs=segs)

    results = {r.case: r for r in ev.evaluate(segs_dir, gts_dir, tmp_path / "out", progress=False)}
    assert results[names[0]].dsc < 1.0 and results[names[0]].nsd < 1.0
    assert [s.label for s in results[names[0]].scores if s.dsc < 1.0] == [2]
    for name in names[1:]:
        assert results[name].dsc == 1.0 and results[name].nsd == pytest.approx(1.0)
    rows = _read_csv(tmp_path / "out" / "metrics.csv")
    lowered = [(row["case"], row["label"]) for row in rows if float(row["dsc"]) < 1.0]
    assert lowered == [(names[0], "2")]


def test_spacing_order_changes_anisotropic_nsd(shared_data, tmp_path):
    gts_dir = _copy_gts(shared_data, tmp_path / "gts", [ANISOTROPIC_CASE])
    gts = _gts(gts_dir / f"{ANISOTROPIC_CASE}.npz")
    lesion = gts == 1
    assert not lesion[0].any()  # room to move the lesion one slice down
    segs = gts.copy()
    segs[lesion] = 0
    segs[np.roll(lesion, -1, axis=0)] = 1
    (tmp_path / "segs").mkdir()
    np.savez_compressed(tmp_path / "segs" / f"{ANISOTROPIC_CASE}.npz", segs=segs)

    geometric = ev.evaluate(tmp_path / "segs", gts_dir, tmp_path / "a", progress=False)[0].scores[0]
    challenge = ev.evaluate(tmp_path / "segs", gts_dir, tmp_path / "b", challenge_spacing=True,
                            progress=False)[0].scores[0]
    assert geometric.dsc == challenge.dsc > 0.2
    # One slice is 6.5 mm, beyond the 2 mm tolerance; read in (x,y,z) order it looks like 0.78 mm.
    assert geometric.nsd < 0.9
    assert challenge.nsd == pytest.approx(1.0)
    assert "--challenge-spacing" in (tmp_path / "b" / "summary.md").read_text()


def test_spacing_from_reversed_spacing(tmp_path):
    arrays = {"gts": np.zeros((2, 3, 4), np.uint8), "spacing": np.array([0.5, 0.6, 5.0])}
    assert ev.case_spacing(arrays, tmp_path) == (5.0, 0.6, 0.5)
    assert ev.case_spacing(arrays, tmp_path, challenge_spacing=True) == (0.5, 0.6, 5.0)
    arrays["spacing_zyx"] = np.array([4.0, 0.6, 0.5])
    assert ev.case_spacing(arrays, tmp_path) == (4.0, 0.6, 0.5)
    assert ev.case_spacing({"gts": np.zeros((3, 4), np.uint8)}, tmp_path) == (1.0, 1.0)
    with pytest.raises(QMedSAMError, match="spacing"):
        ev.case_spacing({"gts": np.zeros((2, 3, 4), np.uint8)}, tmp_path)


def test_cli_subcommand(tmp_path, capsys):
    _small_case(tmp_path)
    parser = argparse.ArgumentParser(prog="qmedsam")
    ev.add_subcommand(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", str(tmp_path / "segs"), str(tmp_path / "gts")])
    flags = (args.output, args.overwrite, args.missing_as_zero, args.challenge_spacing)
    assert flags == (None, False, False, False)
    assert args.func(args) == 0
    assert "| CT | 1 | 1.0000 | 1.0000 |" in capsys.readouterr().out
    assert (tmp_path / "segs" / "evaluation" / "summary.md").is_file()

    args = parser.parse_args(["evaluate", str(tmp_path / "segs"), str(tmp_path / "gts"), "-o",
                              str(tmp_path / "o"), "--overwrite", "--missing-as-zero", "--challenge-spacing"])
    assert (args.overwrite, args.missing_as_zero, args.challenge_spacing) == (True, True, True)
    old_spelling = parser.parse_args(["evaluate", "S", "G", "--allow-missing"])  # kept for existing scripts
    assert old_spelling.missing_as_zero is True
    assert args.func(args) == 0 and (tmp_path / "o" / "metrics.csv").is_file()


def test_existing_outputs_need_overwrite(tmp_path):
    _small_case(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("keep me")
    with pytest.raises(QMedSAMError, match="summary.md.*--overwrite"):
        ev.evaluate(tmp_path / "segs", tmp_path / "gts", out, progress=False)
    assert (out / "summary.md").read_text() == "keep me"
    assert not (out / "metrics.csv").exists()
    ev.evaluate(tmp_path / "segs", tmp_path / "gts", out, overwrite=True, progress=False)
    assert "1.0000" in (out / "summary.md").read_text()


def test_missing_prediction(tmp_path):
    _small_case(tmp_path)
    _small_case(tmp_path, "3DBox_MR_absent", shape=(3, 8, 8))
    (tmp_path / "segs" / "3DBox_MR_absent.npz").unlink()
    np.savez(tmp_path / "gts" / "3DBox_MR_absent.npz", gts=np.ones((3, 8, 8), np.uint8),
             spacing=[1.0, 1.0, 2.0])
    # Default: only predicted cases are scored; the ground truth left out is named, not averaged as 0.
    results = ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "default", progress=False)
    assert ev.left_out(results) == ["3DBox_MR_absent"]
    cases = {row["case"]: row for row in _read_csv(tmp_path / "default" / "cases.csv")}
    assert (cases["3DBox_MR_absent"]["prediction"], cases["3DBox_MR_absent"]["dsc"]) == ("left out", "")
    summary = (tmp_path / "default" / "summary.md").read_text()
    assert "left out of the means (1; --missing-as-zero scores them 0" in summary
    assert "| **all (mean over cases)** | 1 | 1.0000 | 1.0000 |" in summary
    assert "MR" not in {row["modality"] for row in _read_csv(tmp_path / "default" / "metrics.csv")}

    # The challenge rule: the missing case scores 0 and counts.
    results = ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", missing_as_zero=True,
                          progress=False)
    missing = [r for r in results if r.missing]
    assert [(r.case, r.dsc, r.nsd) for r in missing] == [("3DBox_MR_absent", 0.0, 0.0)]
    assert ev.left_out(results) == []
    cases = {row["case"]: row for row in _read_csv(tmp_path / "out" / "cases.csv")}
    assert cases["3DBox_MR_absent"]["prediction"] == "missing, scored 0"
    assert float(cases["3DBox_MR_absent"]["dsc"]) == 0.0
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Missing predictions, scored 0 (--missing-as-zero) (1): 3DBox_MR_absent" in summary
    assert "| **all (mean over cases)** | 2 | 0.5000 | 0.5000 |" in summary


def test_chart_marks_left_out_cases(tmp_path):
    """The plot's labels say how many cases each bar leaves out (read back from the figure's tick labels)."""
    _small_case(tmp_path)
    _small_case(tmp_path, "3DBox_MR_absent", shape=(3, 8, 8))
    (tmp_path / "segs" / "3DBox_MR_absent.npz").unlink()
    np.savez(tmp_path / "gts" / "3DBox_MR_absent.npz", gts=np.ones((3, 8, 8), np.uint8), spacing=[1.0, 1.0, 2.0])
    _small_case(tmp_path, "3DBox_CT_absent", shape=(3, 8, 8))
    (tmp_path / "segs" / "3DBox_CT_absent.npz").unlink()
    np.savez(tmp_path / "gts" / "3DBox_CT_absent.npz", gts=np.ones((3, 8, 8), np.uint8), spacing=[1.0, 1.0, 2.0])
    results = ev.score_folders(tmp_path / "segs", tmp_path / "gts", progress=False)
    assert ev.chart_labels(results) == (["CT\n(n=1, 1 left out)", "all\n(n=1, 2 left out)"],
                                        "DSC and NSD per modality (predicted cases only)")
    results = ev.score_folders(tmp_path / "segs", tmp_path / "gts", missing_as_zero=True, progress=False)
    assert ev.chart_labels(results) == (["CT\n(n=2)", "MR\n(n=1)", "all\n(n=3)"],
                                        "DSC and NSD per modality (2 missing case(s) scored 0)")


def test_missing_folders(tmp_path):
    _small_case(tmp_path)
    with pytest.raises(QMedSAMError, match="Prediction folder .*nope.* does not exist"):
        ev.evaluate(tmp_path / "nope", tmp_path / "gts", tmp_path / "out")
    with pytest.raises(QMedSAMError, match="Ground-truth folder .*nope.* does not exist"):
        ev.evaluate(tmp_path / "segs", tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QMedSAMError, match="holds no .npz"):
        ev.evaluate(tmp_path / "segs", tmp_path / "empty", tmp_path / "out")


def test_no_matching_cases(tmp_path):
    _small_case(tmp_path)
    (tmp_path / "segs" / "2DBox_CT_small.npz").rename(tmp_path / "segs" / "other.npz")
    for missing_as_zero in (False, True):
        with pytest.raises(QMedSAMError, match="No matching cases"):
            ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", missing_as_zero=missing_as_zero)


def test_shape_mismatch_names_case(tmp_path):
    _small_case(tmp_path)
    np.savez(tmp_path / "segs" / "2DBox_CT_small.npz", segs=np.zeros((16, 17), np.uint8))
    with pytest.raises(QMedSAMError, match=r"2DBox_CT_small.*\(16, 17\).*\(16, 16\)"):
        ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", progress=False)


def _break_prediction(tmp_path: Path, write) -> Path:
    _small_case(tmp_path)
    path = tmp_path / "segs" / "2DBox_CT_small.npz"
    write(path)
    return path


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"not a zip file at all"), "not a .npz \\(zip\\) file"),
    (lambda p: p.write_bytes(b""), "not a .npz \\(zip\\) file"),
    (lambda p: p.write_bytes(p.read_bytes()[:60]), "damaged or not a valid .npz"),  # truncated archive
    (lambda p: np.save(p.with_suffix(".tmp.npy"), np.zeros((16, 16))) or
     p.with_suffix(".tmp.npy").replace(p), "single-array .npy file"),
    (lambda p: np.savez(p, segs=np.array([{"a": 1}], dtype=object)), "Python objects.*unpickling.*refused"),
    (lambda p: np.savez(p, masks=np.zeros((16, 16), np.uint8)), "lacks 'segs' \\(keys found: 'masks'\\)"),
    (lambda p: np.savez(p, segs=np.zeros((16, 16), np.float32)), "integer label array"),
])
def test_bad_prediction_file(tmp_path, write, message):
    path = _break_prediction(tmp_path, write)
    with pytest.raises(QMedSAMError, match=message) as error:
        ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", progress=False)
    assert str(path) in str(error.value)
    assert not (tmp_path / "out" / "metrics.csv").exists()


def test_ground_truth_without_gts_key(tmp_path):
    _small_case(tmp_path)
    np.savez(tmp_path / "gts" / "2DBox_CT_small.npz", imgs=np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(QMedSAMError, match="Ground truth .*2DBox_CT_small.npz lacks 'gts'"):
        ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", progress=False)


def test_output_path_is_a_file(tmp_path):
    _small_case(tmp_path)
    (tmp_path / "out").write_text("")
    with pytest.raises(QMedSAMError, match="not a folder"):
        ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", progress=False)


def test_hidden_partial_files_are_not_cases(tmp_path):
    """A partial write (.qmedsam-*) or a macOS '._' file beside the predictions is skipped, as segment skips it."""
    _small_case(tmp_path)
    (tmp_path / "segs" / ".qmedsam-1234abcd.2DBox_CT_small.npz").write_bytes(b"partial")
    (tmp_path / "gts" / "._2DBox_CT_small.npz").write_bytes(b"resource fork")
    results = ev.evaluate(tmp_path / "segs", tmp_path / "gts", tmp_path / "out", progress=False)
    assert [(r.case, r.dsc) for r in results] == [("2DBox_CT_small", 1.0)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ev.OUTPUT_NAMES)  # no temp left
