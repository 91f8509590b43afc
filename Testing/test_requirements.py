"""requirements/runtime.txt (the main job's install) stays a closed, same-pinned subset of lock.txt."""

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINE = REPO_ROOT / "QMedSAMSlicer" / "qmedsam"


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


def test_runtime_pins_are_lock_pins(runtime):
    lock = _pins(REPO_ROOT / "requirements" / "lock.txt")
    assert {name: lock.get(name) for name in runtime} == runtime


def test_runtime_holds_every_dependency_of_its_packages(runtime):
    """Closed under 'Requires-Dist' for this platform, without extras: pip installs nothing unpinned beside it."""
    from packaging.requirements import Requirement

    for name in runtime:
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue  # an extra, another platform (tqdm's colorama on Windows) or an older Python
            dependency = _name(requirement.name)
            assert dependency in runtime, f"{name} needs {dependency}, which runtime.txt lacks"


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
    for module in sorted(_third_party_imports()):
        names = {_name(d) for d in distributions.get(module, [])}
        assert names & set(runtime), f"qmedsam imports {module} ({names or 'not installed'}), not in runtime.txt"


def test_project_dependencies_are_in_runtime(runtime):
    text = (REPO_ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = {_name(re.split(r"[<>=!~ ]", item.strip().strip('",'), maxsplit=1)[0])
                for item in block.split(",") if item.strip().strip('"')}
    assert declared <= set(runtime), declared - set(runtime)
