"""`qmedsam evaluate`: score a folder of challenge predictions against a folder of ground truths.

Predictions are `<case>.npz` with `segs`; ground truths are `<case>.npz` with `gts` (+ `spacing`,
`spacing_zyx` for 3D); they are matched by file name. Writes metrics.csv (per case and label), cases.csv
(per case), summary.md (per modality) and dsc_nsd.png into the output folder.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write
from .errors import QMedSAMError
from .metrics import NSD_MIN_DSC, NSD_TOLERANCE_MM, LabelScore, case_metrics
from .npz_io import npz_files_in, read_npz_arrays
from .validation import validate_spacing

OUTPUT_NAMES = ("metrics.csv", "cases.csv", "summary.md", "dsc_nsd.png")
_MODALITY_PATTERN = re.compile(r"^[23]DBox_([^_]+)_")
_MAX_LISTED = 10


@dataclass
class CaseResult:
    case: str
    modality: str
    scores: List[LabelScore]
    missing: bool = False  # no prediction
    counted: bool = True  # in the means: False for a missing case unless missing cases score 0

    @property
    def left_out(self) -> bool:
        return not self.counted

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


def _read_npz(path: Path, key: str, role: str, optional: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """The arrays of a challenge npz whose `key` holds a 2D or 3D integer label array."""
    arrays = read_npz_arrays(path, [key], optional, role=role, needs=f"a {role.lower()} holds '{key}'")
    labels = arrays[key]
    if labels.ndim not in (2, 3) or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise QMedSAMError(f"{role} {path}: '{key}' must be a 2D or 3D integer label array, "
                           f"not {labels.ndim}D {labels.dtype}.")
    return arrays


def _spacing_vector(arrays: Dict[str, np.ndarray], key: str, path: Path) -> Tuple[float, ...]:
    try:
        return validate_spacing(arrays[key], key=key)
    except QMedSAMError as error:
        raise QMedSAMError(f"Ground truth {path}: {error}") from None


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
    return {path.stem: path for path in npz_files_in(folder)}


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def match_cases(segs_dir: Path, gts_dir: Path) -> List[Tuple[str, Optional[Path], Path]]:
    """(case, prediction or None, ground truth) for every ground-truth case."""
    predictions = _npz_by_case(segs_dir, "Prediction")
    truths = _npz_by_case(gts_dir, "Ground-truth")
    if not truths:
        raise QMedSAMError(f"Ground-truth folder {gts_dir} holds no .npz files.")
    if not predictions.keys() & truths.keys():
        raise QMedSAMError(f"No matching cases: none of the {len(predictions)} .npz files in {segs_dir} "
                           f"has the name of one of the {len(truths)} ground truths in {gts_dir}.")
    return [(case, predictions.get(case), truths[case]) for case in sorted(truths)]


# ---------------------------------------------------------------- scoring


def score_case(case: str, pred_path: Optional[Path], gt_path: Path,
               challenge_spacing: bool = False, missing_as_zero: bool = False) -> CaseResult:
    """A case's scores; without a prediction it is left out of the means, or scores 0 (the challenge rule)."""
    truth = _read_npz(gt_path, "gts", "Ground truth", optional=("spacing", "spacing_zyx"))
    gts = truth["gts"]
    spacing = case_spacing(truth, gt_path, challenge_spacing)
    if pred_path is None:
        if not missing_as_zero:
            return CaseResult(case, modality_of(case), [], missing=True, counted=False)
        labels = [int(v) for v in np.unique(gts) if v != 0]
        return CaseResult(case, modality_of(case), [LabelScore(v, 0.0, 0.0) for v in labels], missing=True)
    segs = _read_npz(pred_path, "segs", "Prediction")["segs"]
    if segs.shape != gts.shape:
        raise QMedSAMError(f"Case {case}: prediction 'segs' has shape {segs.shape} but ground truth 'gts' "
                           f"has shape {gts.shape}.")
    return CaseResult(case, modality_of(case), case_metrics(segs, gts, spacing, NSD_TOLERANCE_MM))


def score_folders(segs_dir: Path, gts_dir: Path, *, missing_as_zero: bool = False,
                  challenge_spacing: bool = False, progress: bool = True) -> List[CaseResult]:
    from tqdm import tqdm

    cases = match_cases(Path(segs_dir), Path(gts_dir))
    bar = tqdm(cases, desc="evaluate", unit="case", file=sys.stderr, disable=not progress)
    return [score_case(case, pred, gt, challenge_spacing, missing_as_zero) for case, pred, gt in bar]


def left_out(results: Sequence[CaseResult]) -> List[str]:
    """Ground-truth cases without a prediction that are not in the means."""
    return [r.case for r in results if r.left_out]


# ---------------------------------------------------------------- reports


def modality_means(results: Sequence[CaseResult]) -> List[Tuple[str, int, float, float]]:
    """(modality, cases, mean DSC, mean NSD) per modality, then "all": means over the counted cases."""
    results = [r for r in results if r.counted]
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
    counted = [r for r in results if r.counted]
    text = (f"# Evaluation\n\n{len(counted)} cases. DSC and NSD (tolerance {NSD_TOLERANCE_MM:g} mm, "
            f"scored only where DSC > {NSD_MIN_DSC:g}) averaged over each case's labels, then over cases.\n"
            f"3D spacing: {convention}.\n\n" + summary_markdown(results))
    scored_zero = [r.case for r in results if r.missing and r.counted]
    if scored_zero:
        text += f"\nMissing predictions, scored 0 (--missing-as-zero) ({len(scored_zero)}): {', '.join(scored_zero)}\n"
    if left_out(results):
        text += (f"\nGround truths without a prediction, left out of the means ({len(left_out(results))}; "
                 f"--missing-as-zero scores them 0 as the challenge does): {', '.join(left_out(results))}\n")
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
    def status(r: CaseResult) -> str:
        return "left out" if r.left_out else "missing, scored 0" if r.missing else "ok"

    rows = [(r.case, r.modality, len(r.scores), "" if r.left_out else f"{r.dsc:.6f}",
             "" if r.left_out else f"{r.nsd:.6f}", status(r)) for r in results]
    return _csv_text(("case", "modality", "labels", "dsc", "nsd", "prediction"), rows)


def chart_labels(results: Sequence[CaseResult]) -> Tuple[List[str], str]:
    """The chart's bar labels and title; they say how many cases each bar leaves out or scores 0."""
    rows = modality_means(results)
    omitted = {name: sum(r.left_out and name in ("all", r.modality) for r in results) for name, *_ in rows}
    labels = [f"{name}\n(n={count}" + (f", {omitted[name]} left out)" if omitted[name] else ")")
              for name, count, *_ in rows]
    zeros = sum(r.missing and r.counted for r in results)
    title = "DSC and NSD per modality" + (f" ({zeros} missing case(s) scored 0)" if zeros else
                                          " (predicted cases only)" if left_out(results) else "")
    return labels, title


def chart_png(results: Sequence[CaseResult]) -> bytes:
    """Grouped bars of mean DSC and NSD per modality (and over all cases) as PNG."""
    from matplotlib.figure import Figure  # Agg canvas, without touching pyplot's global backend

    rows = modality_means(results)
    labels, title = chart_labels(results)
    positions = np.arange(len(rows))
    figure = Figure(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.0), layout="constrained")
    axes = figure.add_subplot()
    width = 0.38
    for offset, column, name in ((-width / 2, 2, "DSC"), (width / 2, 3, "NSD")):
        bars = axes.bar(positions + offset, [row[column] for row in rows], width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(positions, labels)
    axes.set_ylim(0, 1.2)  # headroom for the legend above the bars
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_ylabel("mean over cases")
    axes.set_title(title)
    axes.legend(loc="upper right", ncol=2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


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
        atomic_write(paths[name], lambda temp, data=data: temp.write_bytes(data), overwrite=True)


def evaluate(segs_dir, gts_dir, out_dir=None, *, overwrite: bool = False, missing_as_zero: bool = False,
             challenge_spacing: bool = False, progress: bool = True) -> List[CaseResult]:
    """Score SEGS against GTS and write the reports into `out_dir` (default SEGS/evaluation)."""
    segs_dir, gts_dir = Path(segs_dir), Path(gts_dir)
    out_dir = Path(out_dir) if out_dir is not None else segs_dir / "evaluation"
    paths = claim_outputs(out_dir, overwrite)
    results = score_folders(segs_dir, gts_dir, missing_as_zero=missing_as_zero,
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing reports (default: refuse)")
    parser.add_argument("--missing-as-zero", "--allow-missing", dest="missing_as_zero", action="store_true",
                        help="the challenge rule: score ground-truth cases without a prediction 0 and count them "
                             "in the means (default: score only predicted cases and list the ones left out)")
    parser.add_argument("--challenge-spacing", action="store_true",
                        help="pass 3D 'spacing' (x,y,z) unchanged as the challenge script does (default: the "
                             "geometrically correct z,y,x order)")
    parser.set_defaults(func=run)


def run(args) -> int:
    results = evaluate(args.segs, args.gts, args.output, overwrite=args.overwrite,
                       missing_as_zero=args.missing_as_zero, challenge_spacing=args.challenge_spacing)
    print(summary_markdown(results), end="")
    scored_zero = [r.case for r in results if r.missing and r.counted]
    if scored_zero:
        print(f"{len(scored_zero)} case(s) had no prediction and scored 0: {_listed(scored_zero)}", file=sys.stderr)
    if left_out(results):
        print(f"{len(left_out(results))} ground truth(s) had no prediction and were left out of the means: "
              f"{_listed(left_out(results))} (--missing-as-zero scores them 0, as the challenge does)",
              file=sys.stderr)
    return 0
