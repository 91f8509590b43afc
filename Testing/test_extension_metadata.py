"""The extension's metadata as Slicer's packaging and the Extensions Index read it.

SlicerExtensionCPack.cmake hands EXTENSION_DESCRIPTION (and the other values) unquoted to
slicerFunctionGenerateExtensionDescription, whose cmake_parse_arguments treats each as one value: a `;` in
it splits the text and the generated description keeps only its first part. The test runs CMake itself on
the top-level CMakeLists.txt (Slicer's commands stubbed) and passes the values the same way.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KEYS = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS")
INDEX_FILE = REPO / "Resources" / "ExtensionsIndex" / "QMedSAM.json"

STUBS = """
macro(project name)
  set(PROJECT_NAME ${name})
endmacro()
macro(find_package)
endmacro()
macro(add_subdirectory)
endmacro()
set(Slicer_USE_FILE "@EMPTY@")
set(Slicer_EXTENSION_GENERATE_CONFIG "@EMPTY@")
set(Slicer_EXTENSION_CPACK "@CPACK@")
include("@CMAKELISTS@")
"""
# What SlicerExtensionCPack.cmake does with the values: unquoted arguments to a one-value keyword parser.
CPACK = """
function(describe)
  cmake_parse_arguments(ARG "" "@KEYS@" "" ${ARGN})
  message("PROJECT_NAME=${PROJECT_NAME}")
  foreach(key @KEYS@)
    message("${key}=${ARG_${key}}")
  endforeach()
  message("UNPARSED=${ARG_UNPARSED_ARGUMENTS}")
endfunction()
describe(@ARGS@)
"""


@pytest.fixture(scope="module")
def cmake_values(tmp_path_factory) -> dict:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    folder = tmp_path_factory.mktemp("cmake")
    (folder / "empty.cmake").write_text("")
    (folder / "cpack.cmake").write_text(CPACK.replace("@KEYS@", ";".join(KEYS)).replace(
        "@ARGS@", " ".join(f"{key} ${{{key}}}" for key in KEYS)))
    (folder / "run.cmake").write_text(STUBS.replace("@EMPTY@", (folder / "empty.cmake").as_posix()).replace(
        "@CPACK@", (folder / "cpack.cmake").as_posix()).replace("@CMAKELISTS@", (REPO / "CMakeLists.txt").as_posix()))
    run = subprocess.run([cmake, "-P", str(folder / "run.cmake")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return dict(line.split("=", 1) for line in run.stderr.splitlines() if "=" in line)


def written_values() -> dict:
    """The values as written between the quotes in CMakeLists.txt."""
    text = (REPO / "CMakeLists.txt").read_text()
    return {key: re.search(rf'set\({key} "([^"]*)"\)', text).group(1) for key in KEYS}


def test_every_value_reaches_packaging_whole(cmake_values):
    assert cmake_values["UNPARSED"] == ""
    for key, written in written_values().items():
        assert ";" not in written, f"{key} holds a CMake list separator"
        assert cmake_values[key] == written, key


def test_names_follow_the_index_rules(cmake_values):
    extension = cmake_values["PROJECT_NAME"]
    assert not extension.lower().startswith("slicer")
    description = json.loads(INDEX_FILE.read_text())
    assert INDEX_FILE.stem == extension  # the Index file is named after the extension (= project name)
    repository = description["scm_url"].rstrip("/").split("/")[-1]
    assert repository == "Slicer" + extension
    for url in (cmake_values["EXTENSION_HOMEPAGE"], cmake_values["EXTENSION_ICONURL"],
                *cmake_values["EXTENSION_SCREENSHOTURLS"].split()):
        assert f"/{repository}" in url, url
    assert "scm_revision" not in description  # no pinned revision: the Index checks a depth-1 clone (size)


def test_contributors_read_name_and_organisation(cmake_values):
    contributors = [c.strip() for c in cmake_values["EXTENSION_CONTRIBUTORS"].split(",")]
    assert contributors and all(re.fullmatch(r"[^()]+ \([^()]+\)", c) for c in contributors), contributors


def test_index_file_is_lf_only_json_with_the_schema():
    raw = INDEX_FILE.read_bytes()
    assert b"\r" not in raw
    description = json.loads(raw)
    assert description["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/")
    assert description["category"] == "Segmentation" and description["tier"] in (1, 3, 5)
    assert set(description) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_url",
                                "scm_revision", "scm_type", "enabled", "tier"}


def test_module_help_links_the_documentation():
    source = (REPO / "QMedSAMSlicer" / "QMedSAMSlicer.py").read_text()
    help_text = re.search(r"self\.parent\.helpText = \((.*?)\)\n", source, re.S).group(1)
    assert 'href="https://github.com/qmedsam/SlicerQMedSAM' in help_text
