"""`qmedsam bench`: speed and memory, every number measured in the same run on this machine.

1. Encoder/decoder latency (median of --repeats) for every catalogue model present.
2. A new box on an already-encoded image: the interactive path (cache hit + decoder + post-processing).
3. Per-case wall time of the engine on the challenge cases given with --data/--cases.
4. Peak memory (RSS) for 241 boxes on a 1920x2560 image tiled from the 2D case with the most boxes,
   measured in a fresh child process.
The output starts with the CPU, its int8/bf16 instruction sets and the ONEDNN_MAX_CPU_ISA in force, since
INT8 speed (and today INT8 results) depend on them. The engine never imports torch: the comparison with the
official pipeline in torch is `python -m training.evaluation.bench_torch`, which runs this with a torch reference.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .cli import THREADS_HELP
from .errors import QMedSAMError

# Instruction sets that decide int8/bf16 kernels in OpenVINO's CPU plugin (oneDNN), as /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
MEMORY_PROBE_BOXES = 241
MEMORY_PROBE_SHAPE = (1920, 2560)


def _median_ms(function, repeats: int, warmup: int = 1, setup=None) -> float:
    """Median wall time of `function` over `repeats` runs after `warmup` ones; `setup`, if given, runs untimed
    before each."""
    times = []
    for index in range(warmup + repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        function()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def machine_info(threads: int | None) -> dict:
    """CPU model, which of ISA_FLAGS it has, the ONEDNN_MAX_CPU_ISA cap in force, threads and versions."""
    model_name, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if model_name is None and line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:  # not Linux: the model name from platform, flags unknown
        pass
    cpu = model_name or platform.processor() or "unknown"
    from importlib import metadata

    versions = {}
    for name in ("openvino", "torch", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "isa": {flag: flag in flags for flag in ISA_FLAGS} if flags else {},
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
            "logical_cpus": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "versions": versions}


def format_machine(machine: dict) -> list[str]:
    """The first lines of the report: what the numbers below depend on."""
    isa = machine["isa"]
    have = ", ".join(flag for flag in ISA_FLAGS if isa.get(flag)) or "none of them"
    lacks = ", ".join(flag for flag in ISA_FLAGS if isa and not isa[flag])
    cap = machine.get("onednn_max_cpu_isa") or "not set (oneDNN uses the best the CPU has)"
    return [f"cpu: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, {machine['threads'] or 'all'} threads",
            f"int8/bf16 instruction sets: {have}" + (f"; lacks {lacks}" if lacks else "")
            if isa else "int8/bf16 instruction sets: unknown (no /proc/cpuinfo)",
            f"ONEDNN_MAX_CPU_ISA: {cap}",
            "versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())]


def latency_rows(threads: int | None, repeats: int, reference=None, models: list[str] | None = None) -> list[dict]:
    """One row per present catalogue model, or per named one (and the FP32 model's bf16 run where the CPU has
    bf16), after `reference`'s."""
    from .catalogue import load_catalogue
    from .runtime import CompiledPair, supports_bf16

    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 256, 256), dtype=np.float32)
    boxes = np.array([[20 + 8 * i, 30 + 5 * i, 120 + 6 * i, 150 + 4 * i] for i in range(16)], np.float32)
    rows = []
    if reference is not None:
        rows.append(reference.latency_row(threads, image, boxes, _median_ms, repeats))
    present = [entry for entry in load_catalogue() if entry.present]  # absent: `qmedsam models --fetch NAME`
    if models:
        unknown = sorted(set(models) - {entry.name for entry in present})
        if unknown:
            raise QMedSAMError(f"--latency-models: {', '.join(unknown)} not present; `qmedsam models` lists them.")
        present = [entry for entry in present if entry.name in models]
    variants = [(entry, "f32") for entry in present]
    if supports_bf16():  # what OpenVINO would pick by default on this CPU, for comparison
        variants += [(entry, "bf16") for entry in present if entry.precision == "fp32"]
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


def cached_box_ms(case, threads: int | None, repeats: int, model: str | None = None) -> dict:
    """Interactive path: the image is already encoded; the user draws one more box (a 2D case with >= 2 boxes)."""
    from .engine import Segmenter

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


def case_rows(cases: list, threads: int | None, reference=None, repeats: int = 3,
              model: str | None = None) -> list[dict]:
    """Engine wall time per case; with a `reference` (the torch side), its time and the masks' agreement."""
    from .engine import EmbeddingCache, Segmenter, segment_case
    from .metrics import label_agreement

    segmenter = Segmenter(model, threads=threads)
    official = reference.official_pipeline(threads) if reference is not None else None
    rows = []
    for case in cases:
        name = case.name
        # 2D cases: median of `repeats` cold runs each (a run is ~1 s, noise is not); 3D cases: one run.
        runs = repeats if case.kind == "2D" else 1

        def engine_run(case=case):
            segmenter.cache = EmbeddingCache(512)  # every run starts cold, as a fresh file would
            return segment_case(segmenter, case.kind, case.image, case.boxes)

        runs_before = segmenter.stats.encoder_runs
        seconds, ours = _timed(engine_run, runs)
        row = {"case": name, "kind": case.kind, "boxes": len(case.boxes), "runs": runs, "engine_s": seconds,
               "engine_encoder_runs": (segmenter.stats.encoder_runs - runs_before) // runs}
        if official is not None:
            official.encoder_runs = 0
            seconds, theirs = _timed(lambda case=case: official.segment_case(case.kind, case.image, case.boxes),
                                     runs)
            row.update(torch_s=seconds, torch_encoder_runs=official.encoder_runs // runs)
            row["speedup"] = row["torch_s"] / row["engine_s"]
            row["agreement_dice"] = label_agreement(ours, theirs)
        rows.append(row)
        print(f"  {name}: engine {row['engine_s']:.2f} s" +
              (f", torch {row['torch_s']:.2f} s, x{row['speedup']:.1f}" if "torch_s" in row else ""),
              file=sys.stderr)
    return rows


def many_boxes_probe(case_path: str, threads: int | None, boxes_wanted: int = MEMORY_PROBE_BOXES,
                     model: str | None = None) -> None:
    """Child process: a 2D case tiled to 1920x2560 with its real boxes repeated per tile, the first 241."""
    from .engine import Segmenter
    from .npz_io import load_npz_case

    case = load_npz_case(case_path)
    tile_h, tile_w = case.image.shape[:2]
    height, width = MEMORY_PROBE_SHAPE
    tiles_y, tiles_x = -(-height // tile_h), -(-width // tile_w)
    image = np.tile(case.image, (tiles_y, tiles_x, 1))[:height, :width]
    boxes = [box + [tx * tile_w, ty * tile_h, tx * tile_w, ty * tile_h]
             for ty in range(tiles_y) for tx in range(tiles_x) for box in case.boxes
             if box[3] + ty * tile_h < height and box[2] + tx * tile_w < width]
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


def decoder_memory_probe(boxes: int, threads: int | None) -> None:
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


def memory_row(case_path: Path, threads: int | None, model: str | None = None) -> dict:
    row = _child(f"from qmedsam.bench import many_boxes_probe; "
                 f"many_boxes_probe({str(case_path)!r}, {threads}, model={model!r})")
    row["tiled_case"] = case_path.stem
    probe = _child(f"from qmedsam.bench import decoder_memory_probe; decoder_memory_probe(33, {threads})")
    row["decoder_mb_per_box"] = (probe["peak_after_mb"] - probe["peak_before_mb"]) / 32
    return row


def format_tables(report: dict) -> str:
    lines = ["| model | files MB | encoder ms | decoder 1 box ms | decoder 16 boxes ms |",
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


def load_cases(data: str | None, names: list[str] | None) -> list:
    """The challenge cases to measure: every imgs/*.npz of `data`, or the named ones."""
    from .npz_io import load_npz_case

    if data is None:
        raise QMedSAMError("qmedsam bench needs challenge cases for its cached-box, per-case and memory rows: "
                           "pass --data DIR (a folder with imgs/*.npz), or --latency-only for model latencies alone.")
    folder = Path(data) / "imgs"
    if not folder.is_dir():
        raise QMedSAMError(f"No challenge cases at {data} (expected {folder}/*.npz); pass --data DIR.")
    paths = [folder / f"{name}.npz" for name in names] if names else sorted(folder.glob("*.npz"))
    missing = [path.stem for path in paths if not path.is_file()]
    if missing or not paths:
        raise QMedSAMError(f"No case {', '.join(missing) or '*.npz'} in {folder}; check --cases and --data.")
    return [load_npz_case(path) for path in paths]


def run(args, reference=None) -> int:
    """`reference`: the torch side (training.evaluation.bench_torch) for its latency row, times and mask agreement."""
    report = {"machine": machine_info(args.threads)}
    print("\n".join(format_machine(report["machine"])), flush=True)
    cases = [] if args.latency_only else load_cases(args.data, args.cases)
    print("latency...", file=sys.stderr)
    report["latency"] = latency_rows(args.threads, args.repeats, reference, args.latency_models)
    if not args.latency_only:
        from .catalogue import find_model

        report["engine_model"] = find_model(args.model).name
        flat = [case for case in cases if case.kind == "2D"]
        interactive = next((case for case in flat if len(case.boxes) >= 2), None)
        if interactive is not None:
            report["cached_box"] = cached_box_ms(interactive, args.threads, args.repeats, args.model)
        if not args.skip_cases:
            print("cases...", file=sys.stderr)
            report["cases"] = case_rows(cases, args.threads, reference, args.case_repeats, args.model)
        if not args.skip_memory and flat:
            print("memory...", file=sys.stderr)
            busiest = max(flat, key=lambda case: len(case.boxes))
            report["memory"] = memory_row(Path(args.data) / "imgs" / f"{busiest.name}.npz", args.threads, args.model)
    print("\n" + format_tables(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def add_arguments(parser) -> None:
    """The options of `qmedsam bench` (also used by `python -m training.evaluation.bench_torch`)."""
    parser.add_argument("--data", default=None,
                        help="challenge cases: a folder with imgs/*.npz (required unless --latency-only)")
    parser.add_argument("--cases", nargs="*", default=None, help="case names in DATA/imgs (default: all)")
    parser.add_argument("--model", default=None,
                        help="model for the cached-box, per-case and memory rows (default: the catalogue's default)")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    parser.add_argument("--repeats", type=int, default=12, help="runs per latency median (default: %(default)s)")
    parser.add_argument("--case-repeats", type=int, default=3,
                        help="runs per 2D case, median; 3D cases run once (default: %(default)s)")
    parser.add_argument("--latency-models", nargs="*", default=None,
                        help="models in the latency table (default: every present catalogue model)")
    parser.add_argument("--latency-only", action="store_true", help="only the model latencies; needs no --data")
    parser.add_argument("--skip-cases", action="store_true", help="leave out the per-case rows")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the peak-memory probe")
    parser.add_argument("--json", default=None, help="also write the report as JSON here")


def add_subcommand(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="CPU and instruction sets, model latency, per-case speed, peak memory")
    add_arguments(bench)
    bench.set_defaults(func=run)
