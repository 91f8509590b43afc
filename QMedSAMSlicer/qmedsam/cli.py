"""`qmedsam` command line: segment, evaluate, bench, models.

Every user error is a QMedSAMError: printed as one line, exit code 2, nothing written. All inputs are
read and checked, and all output paths claimed, before the first output is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import QMedSAMError
from .volume_io import VOLUME_SUFFIXES


def _is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _volume_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass
class _Job:
    """One input and where its result goes."""

    source: Path
    output: Path
    boxes_json: Path | None = None


def _plan_jobs(inputs: list[str], outdir: Path, boxes: str | None) -> list[_Job]:
    from .npz_io import find_npz_inputs

    volume_paths = [Path(p) for p in inputs if _is_volume(Path(p))]
    other = [p for p in inputs if not _is_volume(Path(p))]
    jobs = [_Job(path, outdir / path.name) for path in (find_npz_inputs(other) if other else [])]
    if boxes is not None and len(volume_paths) != 1:
        raise QMedSAMError("--boxes goes with exactly one NIfTI/NRRD/MHA volume; for several volumes put "
                           "<volume name>.boxes.json beside each volume instead.")
    for path in volume_paths:
        if not path.is_file():
            raise QMedSAMError(f"Input volume {path} does not exist or is not a file.")
        box_file = Path(boxes) if boxes else path.with_name(_volume_stem(path) + ".boxes.json")
        if not box_file.is_file():
            raise QMedSAMError(f"No boxes for volume {path}: expected {box_file}. Give the boxes as JSON with "
                               "--boxes FILE (format: see `qmedsam segment --help`).")
        jobs.append(_Job(path, outdir / (_volume_stem(path) + "_labels.nii.gz"), box_file))
    if not jobs:
        raise QMedSAMError("No input given: name challenge .npz files or folders, or NIfTI/NRRD/MHA volumes.")
    seen = {}
    for job in jobs:
        if job.output in seen:
            raise QMedSAMError(f"{job.source} and {seen[job.output]} would both write {job.output}; "
                               "rename one of them.")
        seen[job.output] = job.source
    return jobs


def _case_name(job: _Job) -> str:
    """The name a --clicks file uses for this input: the .npz case name or the volume's name."""
    return _volume_stem(job.source) if job.boxes_json is not None else job.source.stem


def _read_clicks(path: str | None, jobs: list[_Job]) -> dict:
    """{case: clicks per box} from a --clicks JSON file; every case it names must be an input."""
    if path is None:
        return {}
    try:
        clicks = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise QMedSAMError(f"--clicks file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        raise QMedSAMError(f"Cannot read --clicks file {path} ({error}).") from None
    except json.JSONDecodeError as error:
        raise QMedSAMError(f"--clicks file {path} is not valid JSON ({error}).") from None
    if not isinstance(clicks, dict):
        raise QMedSAMError(f"--clicks file {path} holds a {type(clicks).__name__}; expected an object "
                           '{"<case>": [[[x, y, 1], [x, y, 0]], []]} with one list of clicks per box.')
    names = {_case_name(job) for job in jobs}
    unknown = sorted(set(clicks) - names)
    if unknown:
        raise QMedSAMError(f"--clicks file {path} names case {unknown[0]!r}, which is not an input (inputs: "
                           f"{', '.join(sorted(names))}).")
    return clicks


def _check_clicks(path: str, name: str, kind: str, image, boxes, clicks) -> None:
    """The same checks the engine makes, before anything is written, with the file and case in the message."""
    from .validation import validate_boxes_3d, validate_clicks_2d, validate_clicks_3d

    try:
        if kind == "2D":
            validate_clicks_2d(clicks, len(boxes), image.shape[:2])
        else:
            validate_clicks_3d(clicks, validate_boxes_3d(boxes, image.shape), image.shape)
    except QMedSAMError as error:
        raise QMedSAMError(f"--clicks file {path}, case {name!r}: {error}") from None


def _overlay_path(job: _Job) -> Path:
    return job.output.with_name(_volume_stem(job.source) + "_overlay.png")


def _load_job(job: _Job, window):
    """Read and validate one input: (kind, uint8 image, boxes, reference image or None)."""
    if job.boxes_json is None:
        from .npz_io import load_npz_case

        case = load_npz_case(job.source)
        return case.kind, case.image, case.boxes, None
    from .intensity import to_uint8
    from .validation import validate_volume
    from .volume_io import read_boxes_json, read_volume

    volume = read_volume(job.source)
    image = to_uint8(validate_volume(volume.array), window=window)
    return "3D", image, read_boxes_json(job.boxes_json, volume), volume


def _parse_window(text: str | None):
    if text is None:
        return None
    try:
        level, width = (float(v) for v in text.split(","))
    except ValueError:
        raise QMedSAMError(f"--window takes LEVEL,WIDTH (e.g. 40,400 for soft-tissue CT), got {text!r}.") from None
    if width <= 0:
        raise QMedSAMError(f"--window width must be positive, got {width}.")
    return level, width


def run_segment(args) -> int:
    from tqdm import tqdm

    from .atomic import check_writable_target
    from .engine import Segmenter, segment_case
    from .npz_io import save_segs_npz
    from .volume_io import write_label_image

    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise QMedSAMError(f"Output folder {outdir} exists and is not a folder.")
    window = _parse_window(args.window)
    jobs = _plan_jobs(args.inputs, outdir, args.boxes)
    clicks = _read_clicks(args.clicks, jobs)
    for job in jobs:  # read and check every input, and the model, before anything is written
        kind, image, boxes, _ = _load_job(job, window)
        if _case_name(job) in clicks:
            _check_clicks(args.clicks, _case_name(job), kind, image, boxes, clicks[_case_name(job)])
    segmenter = Segmenter(args.model, threads=args.threads, cache_mb=args.cache_mb,
                          models_dir=Path(args.models_dir) if args.models_dir else None,
                          inference_precision=args.inference_precision)
    _make_folder(outdir)
    for job in jobs:
        check_writable_target(job.output, args.overwrite)
        if args.overlay:
            check_writable_target(_overlay_path(job), args.overwrite)
    for job in tqdm(jobs, desc="cases", unit="case", disable=len(jobs) == 1 or args.quiet):
        kind, image, boxes, reference = _load_job(job, window)
        # The slice bar opens at the first progress report, when its total is known (never "0slice"); only 3D
        # reports progress, so a 2D image, one step, gets no bar of its own.
        bars = []

        def progress(done, total, bars=bars, name=job.source.name):
            if not bars:
                bars.append(tqdm(total=total, desc=name, unit="slice", leave=False, disable=args.quiet))
            bars[0].update(done - bars[0].n)

        try:
            labels = segment_case(segmenter, kind, image, boxes, progress=progress, clicks=clicks.get(_case_name(job)))
        finally:
            for bar in bars:
                bar.close()
        if reference is None:
            save_segs_npz(job.output, labels, overwrite=args.overwrite)
        else:
            write_label_image(job.output, labels, reference, overwrite=args.overwrite)
        if args.overlay:
            from .overlay import write_overlay_png

            write_overlay_png(_overlay_path(job), image, labels, overwrite=args.overwrite)
        if not args.quiet:
            tqdm.write(f"{job.source.name}: {len(boxes)} box(es) -> {job.output}")
    return 0


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise QMedSAMError(f"Cannot create output folder {folder} ({error.strerror}); choose another -o.") from None


def run_models(args) -> int:
    from .catalogue import load_catalogue, load_click_decoders

    entries = load_catalogue(Path(args.models_dir) if args.models_dir else None)
    if args.fetch or args.import_from or args.remove:
        return _change_models(args, entries)
    if args.json:
        print(json.dumps([e.record for e in entries], indent=2))
        return 0
    print(f"{'name':32} {'precision':14} {'calibration':12} {'default':8} {'MB':>6}  where")
    for entry in entries:
        where = str(entry.folder) if entry.present else "absent: qmedsam models --fetch " + entry.name
        print(f"{entry.name:32} {entry.precision:14} {entry.calibration:12} {'yes' if entry.default else '':8} "
              f"{entry.total_bytes / 1e6:6.1f}  {where}")
    for decoder in load_click_decoders(Path(args.models_dir) if args.models_dir else None):
        print(f"click decoder for every model (segment --clicks): {decoder.name}, "
              f"{sum(decoder.sizes.values()) / 1e6:.1f} MB, {decoder.folder}")
    return 0


def _change_models(args, entries) -> int:
    """--fetch / --import-from / --remove: the only commands that download or delete models."""
    from . import model_store
    from .catalogue import find_model

    folder = Path(args.models_dir) if args.models_dir else None
    if args.import_from:
        for name in model_store.import_models(args.import_from, entries):
            print(f"imported {name} into {find_model(name, folder).folder}")
    if args.remove:
        print(f"removed {args.remove} from {model_store.remove(find_model(args.remove, folder))}")
    if args.fetch:
        from tqdm import tqdm

        entry = find_model(args.fetch, folder)
        if entry.present:
            print(f"{entry.name} is already present in {entry.folder}")
            return 0
        with tqdm(total=entry.total_bytes, unit="B", unit_scale=True, desc=entry.name, disable=args.quiet) as bar:
            target = model_store.fetch(entry, progress=lambda done, total: bar.update(done - bar.n))
        print(f"fetched {entry.name} into {target} (sha256 verified)")
    return 0


# One default for every command that runs the model (segment, bench): what the user gets unasked.
THREADS_HELP = "CPU threads for OpenVINO (default: all cores, OpenVINO's choice)"

BOXES_HELP = """Volume boxes are JSON: {"coordinates": "voxel" | "physical", "boxes": [{"min": [x, y, z],
"max": [x, y, z], "name": "liver"}]}; physical coordinates are LPS millimetres (ITK/SimpleITK). Clicks (--clicks)
are JSON: {"<case>": [[[x, y, 1], [x, y, 0]], []]}: per case (the .npz or volume name without suffix), one list
per box, each click [x, y, 1] positive or [x, y, 0] negative in pixels (x column, y row), [x, y, z, 1] in 3D
voxels with z a slice the box covers; a case not in the file is segmented from its boxes alone."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__, evaluate

    parser = argparse.ArgumentParser(prog="qmedsam", description="LiteMedSAM box-prompt segmentation on a CPU.")
    parser.add_argument("--version", action="version", version=f"qmedsam {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser("segment", help="segment challenge .npz files/folders or NIfTI/NRRD/MHA volumes",
                                  epilog=BOXES_HELP)
    segment.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="challenge .npz case(s) with 'imgs' and 'boxes', folder(s) of them, or NIfTI/NRRD/MHA "
                              "volume(s) with boxes JSON beside them (<name>.boxes.json) or given by --boxes")
    segment.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                         help="folder for the results (required; created if missing): <case>.npz with 'segs' for "
                              ".npz inputs, <name>_labels.nii.gz for volumes")
    segment.add_argument("--model", default=None, help="catalogue name (default: the catalogue's default)")
    segment.add_argument("--models-dir", default=None,
                         help="another model catalogue folder, e.g. runs/qat/models (default: the shipped one)")
    segment.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    segment.add_argument("--inference-precision", choices=("f32", "bf16"), default="f32",
                         help="float arithmetic: f32 (default; the FP32 model gives the same masks on every CPU) "
                              "or bf16 (about 2x faster on CPUs with AVX512-BF16/AMX, slightly different masks)")
    segment.add_argument("--boxes", default=None, metavar="FILE",
                         help="boxes JSON for a single volume input (default: <volume name>.boxes.json beside it)")
    segment.add_argument("--clicks", default=None, metavar="FILE",
                         help="positive/negative clicks per box after the box, JSON (format below); boxes with "
                              "clicks use the click decoder (default: none, boxes only)")
    segment.add_argument("--window", default=None, metavar="LEVEL,WIDTH",
                         help="intensity window for non-uint8 volumes, e.g. 40,400 for CT (default: "
                              "0.5-99.5 percentiles of non-zero voxels)")
    segment.add_argument("--overlay", action="store_true",
                         help="also write <name>_overlay.png per input (default: off)")
    segment.add_argument("--cache-mb", type=float, default=512.0, metavar="MB",
                         help="memory for cached image embeddings, 4 MiB per slice; a slice seen again is not "
                              "re-encoded (default: %(default)g)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse)")
    segment.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bars or per-case lines; errors are still printed (default: off)")
    segment.set_defaults(func=run_segment)

    models = commands.add_parser("models", help="list the model catalogue (present / absent); fetch, import, remove",
                                 epilog="--fetch downloads $QMEDSAM_MODELS_URL/<name>/<file> (default "
                                        "https://github.com/qmedsam/SlicerQMedSAM/releases/download) into the per-user "
                                        "folder ($QMEDSAM_USER_MODELS_DIR); http(s)_proxy are honoured.")
    models.add_argument("--models-dir", default=None,
                        help="another model catalogue folder (default: the shipped one)")
    models.add_argument("--json", action="store_true", help="print the catalogue entries as JSON (default: a table)")
    models.add_argument("--fetch", metavar="NAME", help="download a model (sha256-checked); the only network access")
    models.add_argument("--import-from", metavar="FOLDER_OR_ZIP",
                        help="install the missing models found in a folder or zip (<name>/<file>), sha256-checked")
    models.add_argument("--remove", metavar="NAME", help="delete a fetched or imported model (never a shipped one)")
    models.add_argument("-q", "--quiet", action="store_true")
    models.set_defaults(func=run_models)

    evaluate.add_subcommand(commands)
    try:
        from . import bench
    except ImportError:
        pass
    else:
        bench.add_subcommand(commands)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except QMedSAMError as error:
        print(f"qmedsam: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qmedsam: interrupted; outputs written so far are complete, none is partial.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
