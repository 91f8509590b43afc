"""requirements/runtime.txt (the main job's install) and evaluate.txt (its `evaluate` extra) stay closed,
same-pinned subsets of lock.txt, and the main job runs without the optional packages."""

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE = REPO_ROOT / "QMedSAMSlicer" / "qmedsam"
# Imported by qmedsam only where needed, with a one-line error naming the install when missing: module -> extra.
OPTIONAL_IMPORTS = {"SimpleITK": "simpleitk", "surface_distance": "evaluate"}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins(path: Path) -> dict:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[_name(name)] = version
    return pins


@pytest.fixture(scope="module")
def runtime():
    return _pins(REPO_ROOT / "requirements" / "runtime.txt")


@pytest.fixture(scope="module")
def evaluate_extra():
    return _pins(REPO_ROOT / "requirements" / "evaluate.txt")


def test_runtime_and_evaluate_pins_are_lock_pins(runtime, evaluate_extra):
    lock = _pins(REPO_ROOT / "requirements" / "lock.txt")
    for pins in (runtime, evaluate_extra):
        assert {name: lock.get(name) for name in pins} == pins


def _assert_closed(pins: dict, file_name: str) -> None:
    """Closed under 'Requires-Dist' for this platform, without extras: pip installs nothing unpinned beside it."""
    from packaging.requirements import Requirement

    for name in pins:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra, another platform (tqdm's colorama on Windows) or an older Python
            dependency = _name(requirement.name)
            assert dependency in pins, f"{name} needs {dependency}, which {file_name} lacks"


def test_runtime_holds_every_dependency_of_its_packages(runtime):
    _assert_closed(runtime, "runtime.txt")


def test_evaluate_extra_with_runtime_holds_every_dependency(runtime, evaluate_extra):
    assert not set(runtime) & set(evaluate_extra), "evaluate.txt repeats runtime.txt"
    _assert_closed({**runtime, **evaluate_extra}, "runtime.txt + evaluate.txt")


def _third_party_imports() -> set:
    modules = set()
    for path in ENGINE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    # `training` is the repository's own package: bench imports it only where it is installed (ImportError).
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("qmedsam", "training")}


def test_runtime_covers_every_import_of_the_engine_and_cli(runtime):
    distributions = metadata.packages_distributions()
    for module in sorted(_third_party_imports() - set(OPTIONAL_IMPORTS)):
        names = {_name(d) for d in distributions.get(module, [])}
        assert names & set(runtime), f"qmedsam imports {module} ({names or 'not installed'}), not in runtime.txt"


def _optional_dependencies() -> dict:
    """pyproject's [project.optional-dependencies] as {extra: {package names}} (python 3.9 has no tomllib)."""
    text = (REPO_ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = {}
    for extra, items in re.findall(r"^(\w+) = \[(.*?)\]", text, flags=re.M | re.S):
        extras[extra] = {_name(re.split(r"[<>=!~ ]", item, maxsplit=1)[0]) for item in re.findall(r'"([^"]+)"', items)}
    return extras


def test_optional_imports_are_extras(evaluate_extra):
    extras = _optional_dependencies()
    distributions = metadata.packages_distributions()
    for module, extra in OPTIONAL_IMPORTS.items():
        assert {_name(d) for d in distributions[module]} <= extras[extra], (module, extra)
    assert extras["evaluate"] <= set(evaluate_extra)


MAIN_JOB = """
import sys
for module in ("SimpleITK", "scipy", "surface_distance", "torch"):
    sys.modules[module] = None  # absent, as in the main job's environment
import numpy as np
from qmedsam.errors import QMedSAMError
from qmedsam.metrics import dice, normalized_surface_dice
from qmedsam.volume_io import Volume, read_volume, write_label_image
from qmedsam.cli import main
folder = sys.argv[1]
volume = Volume(np.zeros((2, 3, 4), np.int16), (0.5, 0.5, 2.0), (1.0, 2.0, 3.0), np.eye(3))
for suffix in (".nii.gz", ".nrrd"):
    write_label_image(folder + "/labels" + suffix, np.ones((2, 3, 4), np.uint8), volume)
    assert read_volume(folder + "/labels" + suffix).array.sum() == 24
mask = np.ones((2, 3, 4), bool)
assert dice(mask, mask) == 1.0
try:
    normalized_surface_dice(mask, mask, (1.0, 1.0, 1.0))
except QMedSAMError as error:
    print(error)
try:
    read_volume(folder + "/labels.nii.gz".replace(".nii.gz", ".mha"))
except QMedSAMError as error:
    print(error)
main(["evaluate", "--help"])
"""


def test_main_job_runs_without_the_optional_packages(tmp_path):
    """NIfTI/NRRD in and out, Dice, and the CLI without SimpleITK, scipy and surface-distance; NSD and MHA say
    what to install."""
    (tmp_path / "labels.mha").write_bytes(b"x")
    result = subprocess.run([sys.executable, "-c", MAIN_JOB, str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NSD needs the surface-distance package") and "requirements/evaluate.txt" in lines[0]
    assert lines[1] == "Files like labels.mha need the SimpleITK package: pip install SimpleITK"
    assert "usage: qmedsam evaluate" in result.stdout


def test_project_dependencies_are_in_runtime(runtime):
    text = (REPO_ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = {_name(re.split(r"[<>=!~ ]", item.strip().strip('",'), maxsplit=1)[0])
                for item in block.split(",") if item.strip().strip('"')}
    assert declared <= set(runtime), declared - set(runtime)
