"""`qmedsam bench` (engine only, data as arguments) and `python -m training.evaluation.bench_torch` (with torch)."""

import json
import shutil
import subprocess
import sys

import pytest
from qmedsam.bench import ISA_FLAGS, format_machine, machine_info
from qmedsam.cli import main

CASE_2D = "2DBox_CT_sammed2d-amos000475"  # 3 boxes: the cached-box row needs at least 2


@pytest.fixture(autouse=True)
def private_compile_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("QMEDSAM_CACHE_DIR", str(tmp_path / "cache"))


def test_engine_bench_imports_neither_training_nor_torch():
    code = ("import sys, qmedsam.cli, qmedsam.bench; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('training', 'torch', 'cv2')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_machine_lines_name_the_cpu_its_isa_and_the_onednn_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    machine = machine_info(2)
    assert set(machine["isa"]) == set(ISA_FLAGS) and machine["onednn_max_cpu_isa"] == "AVX2"
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    assert machine["isa"]["avx2"] == ("avx2" in flags) and machine["isa"]["amx_int8"] == ("amx_int8" in flags)
    lines = format_machine(machine)
    assert lines[0].startswith("cpu: ") and machine["cpu"] in lines[0]
    assert lines[1].startswith("int8/bf16 instruction sets: ") and lines[2] == "ONEDNN_MAX_CPU_ISA: AVX2"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert format_machine(machine_info(2))[2].startswith("ONEDNN_MAX_CPU_ISA: not set")


@pytest.mark.parametrize("args,phrase", [
    (["bench"], "pass --data DIR"),
    (["bench", "--data", "NOWHERE"], "No challenge cases at"),
    (["bench", "--data", "DATA", "--cases", "no-such-case"], "No case no-such-case"),
])
def test_bench_without_its_data_is_refused_in_one_line(args, phrase, tmp_path, capsys):
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    args = [{"NOWHERE": str(tmp_path / "nowhere"), "DATA": str(tmp_path / "data")}.get(a, a) for a in args]
    assert main(args) == 2
    output = capsys.readouterr()
    assert output.out.startswith("cpu: ")  # the machine lines come first, even before an error
    assert phrase in output.err and len(output.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_on_given_cases_starts_with_the_machine_and_writes_it_to_json(tmp_path, shared_data, capsys):
    data = tmp_path / "data" / "imgs"
    data.mkdir(parents=True)
    shutil.copy(shared_data / "imgs" / f"{CASE_2D}.npz", data)
    report_path = tmp_path / "bench.json"
    assert main(["bench", "--data", str(data.parent), "--model", "litemedsam-fp32", "--repeats", "1",
                 "--latency-models", "litemedsam-fp32", "--case-repeats", "1", "--skip-memory",
                 "--json", str(report_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cpu: ") and out[1].startswith("int8/bf16 instruction sets: ")
    assert out[2].startswith("ONEDNN_MAX_CPU_ISA: ")
    report = json.loads(report_path.read_text())
    assert set(report["machine"]["isa"]) == set(ISA_FLAGS) and "onednn_max_cpu_isa" in report["machine"]
    assert [row["case"] for row in report["cases"]] == [CASE_2D] and report["cases"][0]["engine_s"] > 0
    assert "torch_s" not in report["cases"][0] and report["cached_box"]["case"] == CASE_2D
    assert report["latency"][0]["model"] == "litemedsam-fp32" and report["latency"][0]["encoder_ms"] > 0


@pytest.mark.slow
def test_torch_bench_adds_the_official_pipeline_and_its_agreement(tmp_path, shared_data, capsys):
    from training.evaluation.bench_torch import main as bench_torch

    report_path = tmp_path / "bench.json"
    assert bench_torch(["--data", str(shared_data), "--cases", CASE_2D, "--model", "litemedsam-fp32",
                        "--latency-models", "litemedsam-fp32", "--repeats", "1", "--case-repeats", "1",
                        "--skip-memory", "--json", str(report_path)]) == 0
    assert capsys.readouterr().out.startswith("cpu: ")
    report = json.loads(report_path.read_text())
    assert report["latency"][0]["model"] == "torch-fp32 (reference)"
    row = report["cases"][0]
    assert row["torch_encoder_runs"] == row["engine_encoder_runs"] == 1 and row["agreement_dice"] == 1.0
