"""`qmedsam bench`: speed and memory, every number measured in the same run on this machine.

1. Encoder/decoder latency (median of --repeats) for the torch reference and every catalogue model.
2. A new box on an already-encoded image: the interactive path (cache hit + decoder + post-processing).
3. Per-case wall time: the engine against the official pipeline semantics in torch (no embedding sharing),
   on the same cases, with the agreement (Dice) of their masks.
4. Peak memory (RSS) for 241 boxes on a 1920x2560 image, measured in a fresh child process.
The torch parts need the training extras (torch, opencv); without them they are skipped and said so.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .errors import QMedSAMError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_CASES = ["2DBox_CT_sammed2d-amos000475", "2DBox_US_hc18-000", "2DBox_Dermoscopy_ham10000-ISIC0024311",
                 "2DBox_XRay_covidseg-ARDSSevere", "2DBox_Microscope_dsb2018-stardist",
                 "3DBox_MR_pyradiomics-brain1", "3DBox_MR_totalseg-examplemr"]


def _median_ms(function, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    except (OSError, StopIteration):
        isa = []
    from importlib import metadata

    versions = {}
    for name in ("openvino", "torch", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "isa": isa, "logical_cpus": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "versions": versions}


def _torch_side():
    """training.bench_torch when torch, opencv and the training package are importable, else None."""
    try:
        return importlib.import_module("training.bench_torch")
    except ImportError:
        return None


def latency_rows(threads: int, repeats: int, with_torch: bool) -> list[dict]:
    from .catalogue import load_catalogue
    from .runtime import CompiledPair, supports_bf16

    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 256, 256), dtype=np.float32)
    boxes = np.array([[20 + 8 * i, 30 + 5 * i, 120 + 6 * i, 150 + 4 * i] for i in range(16)], np.float32)
    rows = []
    if with_torch:
        rows.append(_torch_side().latency_row(threads, image, boxes, _median_ms, repeats))
    variants = [(entry, "f32") for entry in load_catalogue()]
    if supports_bf16():  # what OpenVINO would pick by default on this CPU, for comparison
        variants += [(entry, "bf16") for entry in load_catalogue() if entry.precision == "fp32"]
    for entry, precision in variants:
        pair = CompiledPair(entry, threads=threads, inference_precision=precision)
        embedding = pair.encode(image)
        rows.append({"model": entry.name if precision == "f32" else f"{entry.name} @bf16",
                     "files_mb": sum(p.stat().st_size for p in entry.folder.iterdir()
                                     if p.name in entry.record.get("sha256", {})) / 1e6,
                     "encoder_ms": _median_ms(lambda pair=pair: pair.encode(image), repeats),
                     "decoder_1_ms": _median_ms(lambda pair=pair, e=embedding: pair.decode(e, boxes[:1]), repeats),
                     "decoder_16_ms": _median_ms(lambda pair=pair, e=embedding: pair.decode(e, boxes),
                                                 max(3, repeats // 3))})
    return rows


def cached_box_ms(data_dir: Path, threads: int, repeats: int, model: str | None = None) -> dict:
    """Interactive path: the image is already encoded; the user draws one more box."""
    from .engine import Segmenter
    from .npz_io import load_npz_case

    case = load_npz_case(data_dir / "imgs" / "2DBox_CT_sammed2d-amos000475.npz")
    segmenter = Segmenter(model, threads=threads)
    segmenter.segment_2d(case.image, case.boxes[:1])
    runs_before = segmenter.stats.encoder_runs
    box = case.boxes[1:2]
    ms = _median_ms(lambda: segmenter.segment_2d(case.image, box), repeats)
    if segmenter.stats.encoder_runs != runs_before:
        raise RuntimeError("the cached-slice benchmark re-ran the encoder")
    return {"case": case.name, "image": list(case.image.shape), "new_box_on_cached_slice_ms": ms}


def _timed(function, runs: int):
    """Median wall time in seconds over `runs` calls, and the last result."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def case_rows(data_dir: Path, cases: list[str], threads: int, with_torch: bool, repeats: int = 3,
              model: str | None = None) -> list[dict]:
    from .engine import EmbeddingCache, Segmenter, segment_case
    from .metrics import label_agreement
    from .npz_io import load_npz_case

    segmenter = Segmenter(model, threads=threads)
    reference = _torch_side().official_pipeline(threads) if with_torch else None
    rows = []
    for name in cases:
        case = load_npz_case(data_dir / "imgs" / f"{name}.npz")
        # 2D cases: median of `repeats` cold runs each (a run is ~1 s, noise is not); 3D cases: one run.
        runs = repeats if case.kind == "2D" else 1

        def engine_run(case=case):
            segmenter.cache = EmbeddingCache(512)  # every run starts cold, as a fresh file would
            return segment_case(segmenter, case.kind, case.image, case.boxes)

        runs_before = segmenter.stats.encoder_runs
        seconds, ours = _timed(engine_run, runs)
        row = {"case": name, "kind": case.kind, "boxes": len(case.boxes), "runs": runs, "engine_s": seconds,
               "engine_encoder_runs": (segmenter.stats.encoder_runs - runs_before) // runs}
        if reference is not None:
            reference.encoder_runs = 0
            seconds, theirs = _timed(lambda case=case: reference.segment_case(case.kind, case.image, case.boxes),
                                     runs)
            row.update(torch_s=seconds, torch_encoder_runs=reference.encoder_runs // runs)
            row["speedup"] = row["torch_s"] / row["engine_s"]
            row["agreement_dice"] = label_agreement(ours, theirs)
        rows.append(row)
        print(f"  {name}: engine {row['engine_s']:.2f} s" +
              (f", torch {row['torch_s']:.2f} s, x{row['speedup']:.1f}" if "torch_s" in row else ""),
              file=sys.stderr)
    return rows


def many_boxes_probe(data_dir: str, threads: int, boxes_wanted: int = 241, model: str | None = None) -> None:
    """Child process: 241 real nucleus boxes on a 1920x2560 image tiled from the microscopy case."""
    from .engine import Segmenter
    from .npz_io import load_npz_case

    case = load_npz_case(Path(data_dir) / "imgs" / "2DBox_Microscope_dsb2018-stardist.npz")
    tile_h, tile_w = case.image.shape[:2]
    image = np.tile(case.image, (4, 5, 1))[:1920, :2560]
    boxes = [box + [tx * tile_w, ty * tile_h, tx * tile_w, ty * tile_h]
             for ty in range(4) for tx in range(5) for box in case.boxes
             if (box[3] + ty * tile_h) < 1920]
    boxes = np.array(boxes[:boxes_wanted])
    segmenter = Segmenter(model, threads=threads)
    rss_model = _peak_rss_mb()
    start = time.perf_counter()
    labels = segmenter.segment_2d(image, boxes)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    print(json.dumps({"image": list(image.shape), "boxes": len(boxes), "labels_found": int(len(np.unique(labels)) - 1),
                      "block_size": segmenter.block_size, "seconds": seconds,
                      "peak_rss_mb_after_model_load": rss_model, "peak_rss_mb": peak}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss would carry
    over the peak of the (large) parent that started the probe."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decoder_memory_probe(boxes: int, threads: int) -> None:
    """Child process: peak RSS of one decoder call with `boxes` boxes (sizes DECODER_MB_PER_BOX)."""
    from .catalogue import find_model
    from .runtime import CompiledPair

    pair = CompiledPair(find_model("litemedsam-fp32"), threads=threads)
    embedding = pair.encode(np.zeros((1, 3, 256, 256), np.float32))
    pair.decode(embedding, np.tile([[10.0, 10, 100, 100]], (1, 1)))  # warm-up at one box
    before = _peak_rss_mb()
    pair.decode(embedding, np.tile([[10.0, 10, 100, 100]], (boxes, 1)))
    print(json.dumps({"boxes": boxes, "peak_before_mb": before,
                      "peak_after_mb": _peak_rss_mb()}))


def _child(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_row(data_dir: Path, threads: int, model: str | None = None) -> dict:
    row = _child(f"from qmedsam.bench import many_boxes_probe; "
                 f"many_boxes_probe({str(data_dir)!r}, {threads}, model={model!r})")
    probe = _child(f"from qmedsam.bench import decoder_memory_probe; decoder_memory_probe(33, {threads})")
    row["decoder_mb_per_box"] = (probe["peak_after_mb"] - probe["peak_before_mb"]) / 32
    return row


def format_report(report: dict) -> str:
    lines = [f"machine: {report['machine']['cpu']} ({', '.join(report['machine']['isa'])}), "
             f"{report['machine']['threads']} threads; " +
             ", ".join(f"{k} {v}" for k, v in report["machine"]["versions"].items()), ""]
    lines += ["| model | files MB | encoder ms | decoder 1 box ms | decoder 16 boxes ms |",
              "|---|---:|---:|---:|---:|"]
    for row in report["latency"]:
        size = f"{row['files_mb']:.1f}" if "files_mb" in row else "-"
        lines.append(f"| {row['model']} | {size} | {row['encoder_ms']:.0f} | {row['decoder_1_ms']:.1f} | "
                     f"{row['decoder_16_ms']:.0f} |")
    if report.get("cached_box"):
        c = report["cached_box"]
        lines += ["", f"new box on an already-encoded image ({c['case']}, {c['image'][1]}x{c['image'][0]}): "
                      f"{c['new_box_on_cached_slice_ms']:.0f} ms (median, incl. pre/post-processing)"]
    if report.get("cases"):
        lines += ["", f"per-case wall time, engine model {report.get('engine_model', 'default')} "
                      "(2D: median of cold runs; 3D: one run):",
                  "", "| case | boxes | torch official s | engine s | speed-up | encoder runs torch/engine |"
                      " mask agreement (Dice) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for row in report["cases"]:
            lines.append(f"| {row['case']} | {row['boxes']} | {row.get('torch_s', float('nan')):.2f} | "
                         f"{row['engine_s']:.2f} | {row.get('speedup', float('nan')):.1f}x | "
                         f"{row.get('torch_encoder_runs', '-')}/{row['engine_encoder_runs']} | "
                         f"{row.get('agreement_dice', float('nan')):.4f} |")
    if report.get("memory"):
        m = report["memory"]
        lines += ["", f"{m['boxes']} boxes on {m['image'][1]}x{m['image'][0]}: {m['seconds']:.1f} s, "
                      f"peak RSS {m['peak_rss_mb']:.0f} MB (after model load {m['peak_rss_mb_after_model_load']:.0f}"
                      f" MB), decoder block {m['block_size']} boxes; decoder working memory "
                      f"{m['decoder_mb_per_box']:.1f} MB per box in a batch"]
    return "\n".join(lines)


def run(args) -> int:
    data_dir = Path(args.data)
    if not (data_dir / "imgs").is_dir():
        raise QMedSAMError(f"No challenge data at {data_dir} (expected imgs/*.npz); pass --data DIR.")
    with_torch = not args.skip_torch and _torch_side() is not None
    if not with_torch:
        print("torch/opencv/training not importable (or --skip-torch): torch rows skipped", file=sys.stderr)
    report = {"machine": machine_info(args.threads)}
    print("latency...", file=sys.stderr)
    report["latency"] = latency_rows(args.threads, args.repeats, with_torch)
    from .catalogue import find_model

    report["engine_model"] = find_model(args.model).name
    report["cached_box"] = cached_box_ms(data_dir, args.threads, args.repeats, args.model)
    if not args.skip_cases:
        print("cases...", file=sys.stderr)
        report["cases"] = case_rows(data_dir, args.cases or DEFAULT_CASES, args.threads, with_torch,
                                    args.case_repeats, args.model)
    if not args.skip_memory:
        print("memory...", file=sys.stderr)
        report["memory"] = memory_row(data_dir, args.threads, args.model)
    text = format_report(report)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def add_subcommand(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="latency, per-case speed against torch, and peak memory")
    bench.add_argument("--data", default=str(DEFAULT_DATA), help="challenge data folder with imgs/ (and gts/)")
    bench.add_argument("--model", default=None,
                       help="model for the cached-box, per-case and memory rows (default: the catalogue's default)")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument("--repeats", type=int, default=12)
    bench.add_argument("--case-repeats", type=int, default=3, help="runs per 2D case (median); 3D cases run once")
    bench.add_argument("--cases", nargs="*", default=None, help="case names (default: a mix of 2D and 3D)")
    bench.add_argument("--skip-torch", action="store_true")
    bench.add_argument("--skip-cases", action="store_true")
    bench.add_argument("--skip-memory", action="store_true")
    bench.add_argument("--json", default=None, help="also write the report as JSON here")
    bench.set_defaults(func=run)
