"""`qmedsam evaluate`: score a folder of challenge predictions against a folder of ground truths.

Predictions are `<case>.npz` with `segs`; ground truths are `<case>.npz` with `gts` (+ `spacing`,
`spacing_zyx` for 3D); they are matched by file name. Writes metrics.csv (per case and label), cases.csv
(per case), summary.md (per modality) and dsc_nsd.png into the output folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import QMedSAMError
from .metrics import NSD_MIN_DSC, NSD_TOLERANCE_MM, LabelScore, case_metrics

OUTPUT_NAMES = ("metrics.csv", "cases.csv", "summary.md", "dsc_nsd.png")
_MODALITY_PATTERN = re.compile(r"^[23]DBox_([^_]+)_")
_MAX_LISTED = 10


@dataclass
class CaseResult:
    case: str
    modality: str
    scores: List[LabelScore]
    missing: bool = False  # no prediction: every label scored 0

    @property
    def dsc(self) -> float:
        return float(np.mean([s.dsc for s in self.scores])) if self.scores else float("nan")

    @property
    def nsd(self) -> float:
        return float(np.mean([s.nsd for s in self.scores])) if self.scores else float("nan")


def modality_of(case: str) -> str:
    match = _MODALITY_PATTERN.match(case)
    return match.group(1) if match else "unknown"


# ---------------------------------------------------------------- reading


def _open_npz(path: Path, role: str) -> Dict[str, np.ndarray]:
    """All arrays of an npz archive; pickled objects are refused, never loaded."""
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError:  # neither zip nor .npy: numpy would have to unpickle it
        raise QMedSAMError(f"{role} {path} is not an .npz archive (a pickle or a corrupt file); "
                           "it was not loaded.") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise QMedSAMError(f"{role} {path} is not a readable .npz file (corrupt or truncated): "
                           f"{error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise QMedSAMError(f"{role} {path} is a single .npy array, not an .npz archive.")
    with archive:
        try:
            return {name: archive[name] for name in archive.files}
        except ValueError as error:
            if "allow_pickle" in str(error):
                raise QMedSAMError(f"{role} {path} contains pickled Python objects, which are never loaded; "
                                   "save plain numeric arrays.") from None
            raise QMedSAMError(f"{role} {path} holds an unreadable array: {error}") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise QMedSAMError(f"{role} {path} is a corrupt .npz file: {error}") from None


def _read_npz(path: Path, key: str, role: str) -> Dict[str, np.ndarray]:
    """The arrays of a challenge npz whose `key` holds a 2D or 3D integer label array."""
    arrays = _open_npz(path, role)
    if key not in arrays:
        held = ", ".join(arrays) or "nothing"
        raise QMedSAMError(f"{role} {path} has no '{key}' array (it holds: {held}).")
    labels = arrays[key]
    if labels.ndim not in (2, 3) or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise QMedSAMError(f"{role} {path}: '{key}' must be a 2D or 3D integer label array, "
                           f"not {labels.ndim}D {labels.dtype}.")
    return arrays


def _spacing_vector(arrays: Dict[str, np.ndarray], key: str, path: Path) -> Tuple[float, ...]:
    spacing = np.asarray(arrays[key], dtype=float).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise QMedSAMError(f"Ground truth {path}: '{key}' must be 3 positive numbers, not {arrays[key]!r}.")
    return tuple(float(s) for s in spacing)


def case_spacing(arrays: Dict[str, np.ndarray], path: Path,
                 challenge_spacing: bool = False) -> Tuple[float, ...]:
    """Voxel size in the order of the array axes: 1 mm for 2D; (z, y, x) for 3D.

    `spacing` follows MedSAM's pre_CT_MR.py, i.e. SimpleITK's (x, y, z), while arrays are (z, y, x), so we
    prefer `spacing_zyx` or reverse `spacing`. The challenge's compute_metrics.py passes `spacing`
    unchanged, which is geometrically wrong for anisotropic volumes; `challenge_spacing` reproduces it.
    """
    if arrays["gts"].ndim == 2:
        return (1.0, 1.0)
    if challenge_spacing:
        if "spacing" not in arrays:
            raise QMedSAMError(f"Ground truth {path} has no 'spacing', needed by --challenge-spacing.")
        return _spacing_vector(arrays, "spacing", path)
    if "spacing_zyx" in arrays:
        return _spacing_vector(arrays, "spacing_zyx", path)
    if "spacing" in arrays:
        return _spacing_vector(arrays, "spacing", path)[::-1]
    raise QMedSAMError(f"3D ground truth {path} has neither 'spacing' nor 'spacing_zyx'; NSD needs the voxel "
                       "size in millimetres.")


def _npz_by_case(folder: Path, role: str) -> Dict[str, Path]:
    if not folder.is_dir():
        raise QMedSAMError(f"{role} folder {folder} does not exist or is not a folder.")
    return {path.stem: path for path in sorted(folder.glob("*.npz")) if path.is_file()}


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def match_cases(segs_dir: Path, gts_dir: Path, allow_missing: bool) -> List[Tuple[str, Optional[Path], Path]]:
    """(case, prediction or None, ground truth) for every ground-truth case."""
    predictions = _npz_by_case(segs_dir, "Prediction")
    truths = _npz_by_case(gts_dir, "Ground-truth")
    if not truths:
        raise QMedSAMError(f"Ground-truth folder {gts_dir} holds no .npz files.")
    if not predictions.keys() & truths.keys():
        raise QMedSAMError(f"No matching cases: none of the {len(predictions)} .npz files in {segs_dir} "
                           f"has the name of one of the {len(truths)} ground truths in {gts_dir}.")
    missing = sorted(truths.keys() - predictions.keys())
    if missing and not allow_missing:
        raise QMedSAMError(f"{len(missing)} ground-truth case(s) have no prediction in {segs_dir}: "
                           f"{_listed(missing)}. Use --allow-missing to score them 0.")
    return [(case, predictions.get(case), truths[case]) for case in sorted(truths)]


# ---------------------------------------------------------------- scoring


def score_case(case: str, pred_path: Optional[Path], gt_path: Path,
               challenge_spacing: bool = False) -> CaseResult:
    truth = _read_npz(gt_path, "gts", "Ground truth")
    gts = truth["gts"]
    spacing = case_spacing(truth, gt_path, challenge_spacing)
    if pred_path is None:
        labels = [int(v) for v in np.unique(gts) if v != 0]
        return CaseResult(case, modality_of(case), [LabelScore(v, 0.0, 0.0) for v in labels], missing=True)
    segs = _read_npz(pred_path, "segs", "Prediction")["segs"]
    if segs.shape != gts.shape:
        raise QMedSAMError(f"Case {case}: prediction 'segs' has shape {segs.shape} but ground truth 'gts' "
                           f"has shape {gts.shape}.")
    return CaseResult(case, modality_of(case), case_metrics(segs, gts, spacing, NSD_TOLERANCE_MM))


def score_folders(segs_dir: Path, gts_dir: Path, *, allow_missing: bool = False,
                  challenge_spacing: bool = False, progress: bool = True) -> List[CaseResult]:
    from tqdm import tqdm

    cases = match_cases(Path(segs_dir), Path(gts_dir), allow_missing)
    bar = tqdm(cases, desc="evaluate", unit="case", file=sys.stderr, disable=not progress)
    return [score_case(case, pred, gt, challenge_spacing) for case, pred, gt in bar]


# ---------------------------------------------------------------- reports


def modality_means(results: Sequence[CaseResult]) -> List[Tuple[str, int, float, float]]:
    """(modality, cases, mean DSC, mean NSD) per modality, then "all": means over cases, not labels."""
    groups: Dict[str, List[CaseResult]] = {}
    for result in results:
        groups.setdefault(result.modality, []).append(result)
    rows = [(name, len(group), float(np.mean([r.dsc for r in group])), float(np.mean([r.nsd for r in group])))
            for name, group in sorted(groups.items())]
    rows.append(("all", len(results), float(np.mean([r.dsc for r in results])),
                 float(np.mean([r.nsd for r in results]))))
    return rows


def summary_markdown(results: Sequence[CaseResult]) -> str:
    lines = ["| modality | cases | mean DSC | mean NSD |", "|---|---:|---:|---:|"]
    for name, count, dsc, nsd in modality_means(results):
        name = "**all (mean over cases)**" if name == "all" else name
        lines.append(f"| {name} | {count} | {dsc:.4f} | {nsd:.4f} |")
    return "\n".join(lines) + "\n"


def _summary_document(results: Sequence[CaseResult], challenge_spacing: bool) -> str:
    convention = ("`spacing` passed unchanged, as the challenge's compute_metrics.py does "
                  "(--challenge-spacing)" if challenge_spacing
                  else "`spacing_zyx` (or `spacing` reversed to z,y,x); 2D at 1 mm")
    text = (f"# Evaluation\n\n{len(results)} cases. DSC and NSD (tolerance {NSD_TOLERANCE_MM:g} mm, "
            f"scored only where DSC > {NSD_MIN_DSC:g}) averaged over each case's labels, then over cases.\n"
            f"3D spacing: {convention}.\n\n" + summary_markdown(results))
    missing = [r.case for r in results if r.missing]
    if missing:
        text += f"\nMissing predictions, scored 0 ({len(missing)}): {', '.join(missing)}\n"
    return text


def _csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def metrics_csv(results: Sequence[CaseResult]) -> str:
    rows = [(r.case, r.modality, s.label, f"{s.dsc:.6f}", f"{s.nsd:.6f}") for r in results for s in r.scores]
    return _csv_text(("case", "modality", "label", "dsc", "nsd"), rows)


def cases_csv(results: Sequence[CaseResult]) -> str:
    rows = [(r.case, r.modality, len(r.scores), f"{r.dsc:.6f}", f"{r.nsd:.6f}",
             "missing" if r.missing else "ok") for r in results]
    return _csv_text(("case", "modality", "labels", "dsc", "nsd", "prediction"), rows)


def chart_png(results: Sequence[CaseResult]) -> bytes:
    """Grouped bars of mean DSC and NSD per modality (and over all cases) as PNG."""
    from matplotlib.figure import Figure  # Agg canvas, without touching pyplot's global backend

    rows = modality_means(results)
    positions = np.arange(len(rows))
    figure = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    width = 0.38
    for offset, column, name in ((-width / 2, 2, "DSC"), (width / 2, 3, "NSD")):
        bars = axes.bar(positions + offset, [row[column] for row in rows], width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(positions, [f"{row[0]}\n(n={row[1]})" for row in rows])
    axes.set_ylim(0, 1.2)  # headroom for the legend above the bars
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_ylabel("mean over cases")
    axes.set_title("DSC and NSD per modality")
    axes.legend(loc="upper right", ncol=2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, so a reader never sees a partial file."""
    # open(..., "xb") rather than tempfile: the result gets the usual umask permissions, not 0600.
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def claim_outputs(out_dir: Path, overwrite: bool) -> Dict[str, Path]:
    """Check before any work that the output folder can hold our files without silently replacing any."""
    if out_dir.exists() and not out_dir.is_dir():
        raise QMedSAMError(f"Output {out_dir} exists and is not a folder.")
    paths = {name: out_dir / name for name in OUTPUT_NAMES}
    existing = [name for name, path in paths.items() if path.exists()]
    if existing and not overwrite:
        raise QMedSAMError(f"{out_dir} already holds {', '.join(existing)}; use --overwrite to replace them.")
    return paths


def write_reports(results: Sequence[CaseResult], paths: Dict[str, Path],
                  challenge_spacing: bool = False) -> None:
    next(iter(paths.values())).parent.mkdir(parents=True, exist_ok=True)
    contents = {
        "metrics.csv": metrics_csv(results).encode(),
        "cases.csv": cases_csv(results).encode(),
        "summary.md": _summary_document(results, challenge_spacing).encode(),
        "dsc_nsd.png": chart_png(results),
    }
    for name, data in contents.items():
        _write_atomically(paths[name], data)


def evaluate(segs_dir, gts_dir, out_dir=None, *, overwrite: bool = False, allow_missing: bool = False,
             challenge_spacing: bool = False, progress: bool = True) -> List[CaseResult]:
    """Score SEGS against GTS and write the reports into `out_dir` (default SEGS/evaluation)."""
    segs_dir, gts_dir = Path(segs_dir), Path(gts_dir)
    out_dir = Path(out_dir) if out_dir is not None else segs_dir / "evaluation"
    paths = claim_outputs(out_dir, overwrite)
    results = score_folders(segs_dir, gts_dir, allow_missing=allow_missing,
                            challenge_spacing=challenge_spacing, progress=progress)
    write_reports(results, paths, challenge_spacing)
    return results


# ---------------------------------------------------------------- command line


def add_subcommand(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score predicted segs against ground-truth gts (DSC, NSD)",
        description="Score <case>.npz predictions (segs) against ground truths (gts) of the same name. "
                    "Writes metrics.csv, cases.csv, summary.md and dsc_nsd.png.")
    parser.add_argument("segs", metavar="SEGS", help="folder of predictions <case>.npz with 'segs'")
    parser.add_argument("gts", metavar="GTS", help="folder of ground truths <case>.npz with 'gts'")
    parser.add_argument("-o", "--output", metavar="OUTDIR", default=None,
                        help="folder for the reports (default: SEGS/evaluation)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing reports")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score ground-truth cases without a prediction 0 instead of failing")
    parser.add_argument("--challenge-spacing", action="store_true",
                        help="pass 3D 'spacing' (x,y,z) unchanged as the challenge script does, instead of "
                             "the geometrically correct z,y,x order")
    parser.set_defaults(func=run)


def run(args) -> int:
    results = evaluate(args.segs, args.gts, args.output, overwrite=args.overwrite,
                       allow_missing=args.allow_missing, challenge_spacing=args.challenge_spacing)
    print(summary_markdown(results), end="")
    missing = [r.case for r in results if r.missing]
    if missing:
        print(f"{len(missing)} case(s) had no prediction and scored 0: {_listed(missing)}", file=sys.stderr)
    return 0
