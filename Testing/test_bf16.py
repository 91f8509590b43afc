"""bf16 segmentation runs without a crash, cold and warm compiled-model cache, mixed with f32 (issue 13).

OpenVINO names a cache blob without the inference precision, so f32 and bf16 compiles of one model used to
share (and rewrite in place) one file; each run here is a separate `qmedsam segment` process, as a user's.
"""

import os
import shutil
import subprocess
import sys

import pytest
from qmedsam.runtime import supports_bf16

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not supports_bf16(), reason="this CPU has no bf16 instructions")]

CLI = "from qmedsam.cli import main; main()"


def _segment(case_folder, out, cache, precision: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "segment", str(case_folder), "-o", str(out), "--overwrite",
         "--model", "litemedsam-fp32", "--inference-precision", precision, "--threads", "1"],
        env={**os.environ, "QMEDSAM_CACHE_DIR": str(cache)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, f"exit {process.returncode}: {output[-2000:]}"


def test_bf16_segment_cold_warm_and_mixed_with_f32(shared_data, tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(shared_data / "imgs" / "2DBox_CT_sammed2d-s0114111.npz", case)
    cache = tmp_path / "cache"
    # cold, warm, f32 into the same folder, bf16 again, f32 again: the mixes that shared one blob name
    for index, precision in enumerate(["bf16", "bf16", "f32", "bf16", "f32", "bf16"]):
        _finish(_segment(case, tmp_path / f"out{index}", cache, precision))
    blobs = sorted(path.parent.name for path in (cache / "openvino").rglob("*.blob"))
    assert len({name for name in blobs if "-bf16-" in name}) == 1 and len(blobs) == 4  # 2 parts x 2 precisions


def test_bf16_segment_concurrent_processes_on_an_empty_cache(shared_data, tmp_path):
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(shared_data / "imgs" / "2DBox_CT_sammed2d-s0114111.npz", case)
    cache = tmp_path / "cache"
    processes = [_segment(case, tmp_path / f"out{i}", cache, precision)
                 for i, precision in enumerate(["bf16", "bf16", "f32"])]
    for process in processes:
        _finish(process)
