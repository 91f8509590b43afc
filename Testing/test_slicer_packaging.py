"""What ships: every module file is listed in QMedSAMSlicer/CMakeLists.txt, the shipped engine is closed under
its imports, no shipped code imports torch, the extension metadata is complete, the .ui loads in Qt."""

import ast
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "QMedSAMSlicer"
SHIPPED_SUFFIXES = {".py", ".png", ".ui", ".json", ".xml", ".bin", ".svg"}
# CLI-only engine modules: they need SimpleITK/matplotlib/tqdm, which the effect never imports.
NOT_SHIPPED = {f"qmedsam/{name}.py" for name in
               ("bench", "cli", "evaluate", "metrics", "overlay", "volume_io")}


def cmake_entries() -> set:
    text = (MODULE / "CMakeLists.txt").read_text()
    text = re.sub(r"#.*", "", text).replace("${MODULE_NAME}", "QMedSAMSlicer")
    text = text.replace("${CMAKE_CURRENT_SOURCE_DIR}/", "")  # paths relative to the module folder
    return set(re.findall(r"[\w./-]+\.(?:py|png|ui|json|xml|bin|svg)\b", text))


def _catalogue() -> list:
    import json

    return json.loads((MODULE / "Resources/Models/models.json").read_text())["models"]


def _fetched_model_folders() -> set:
    """Models other than the default are fetched or built locally (gitignored), never shipped."""
    return {f"Resources/Models/{m['folder']}/" for m in _catalogue() if not m.get("default")}


def module_files() -> set:
    found = set()
    for path in MODULE.rglob("*"):
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts:
            found.add(path.relative_to(MODULE).as_posix())
    return {name for name in found if not name.startswith(tuple(_fetched_model_folders()))}


def test_every_module_file_is_listed_in_cmake():
    missing = module_files() - cmake_entries() - NOT_SHIPPED
    assert not missing, f"add to QMedSAMSlicer/CMakeLists.txt (or to NOT_SHIPPED with a reason): {sorted(missing)}"


def test_every_cmake_entry_exists_and_self_test_is_registered():
    listed = cmake_entries()
    assert not [name for name in listed if not (MODULE / name).is_file()]
    text = (MODULE / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text
    # ctest runs in the build tree, so the script is named by its absolute source path
    script = "${CMAKE_CURRENT_SOURCE_DIR}/Testing/Python/QMedSAMSlicerSelfTest.py"
    assert f"slicer_add_python_unittest(SCRIPT {script})" in text


def test_the_default_model_ships_and_no_other():
    listed = cmake_entries()
    for model in _catalogue():
        for name in model["sha256"]:
            assert (f"Resources/Models/{model['folder']}/{name}" in listed) == bool(model.get("default")), name


def imports_of(path: Path) -> set:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def shipped_python() -> list:
    return sorted(MODULE / name for name in cmake_entries() if name.endswith(".py"))


def test_shipped_code_never_imports_torch():
    for path in shipped_python():
        heavy = {name for name in imports_of(path) if name.split(".")[0] in ("torch", "torchvision", "timm", "cv2")}
        assert not heavy, f"{path.relative_to(REPO)} imports {heavy}"


def test_shipped_engine_imports_only_shipped_engine_modules():
    listed = cmake_entries()
    for path in (MODULE / "qmedsam").glob("*.py"):
        if f"qmedsam/{path.name}" not in listed:
            continue
        for name in imports_of(path):
            if name.startswith(".") and name.strip("."):
                assert f"qmedsam/{name.strip('.')}.py" in listed, f"{path.name} needs unshipped {name}"
            assert name.split(".")[0] not in ("SimpleITK", "matplotlib", "tqdm", "psutil"), f"{path.name}: {name}"


def test_shipped_slicer_code_imports_only_shipped_engine_modules():
    listed = cmake_entries()
    for path in shipped_python():
        for name in imports_of(path):
            if name.startswith("qmedsam."):
                module = name.split(".")[1]
                assert f"qmedsam/{module}.py" in listed, f"{path.relative_to(MODULE)} needs unshipped {name}"


def test_extension_metadata_is_complete():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({key} "[^"]+"\)', text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert "add_subdirectory(QMedSAMSlicer)" in text
    icon = re.search(r'EXTENSION_ICONURL "https://raw.githubusercontent.com/[^/]+/Slicer[^/]+/main/(.+?)"', text)
    assert icon and (REPO / icon.group(1)).is_file()
    for shot in re.findall(r"raw.githubusercontent.com/[^/]+/Slicer[^/]+/main/([^\s\"]+)", text):
        assert (REPO / shot).is_file(), shot
    assert "Apache License" in (REPO / "LICENSE").read_text() and "MedSAM" in (REPO / "LICENSE").read_text()


def test_no_machine_paths_in_module_files():
    for path in MODULE.rglob("*"):
        if path.suffix in {".py", ".ui", ".txt", ".json"} and "__pycache__" not in path.parts:
            assert "/work/" not in path.read_text(errors="ignore"), path


@pytest.fixture(scope="module")
def qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    widgets = pytest.importorskip("PySide6.QtWidgets")
    return widgets.QApplication.instance() or widgets.QApplication([])


@pytest.mark.parametrize("ui_file", sorted((MODULE / "Resources" / "UI").glob("*.ui")), ids=lambda p: p.name)
def test_ui_files_load_in_qt(qt_app, ui_file):
    """The .ui uses only standard Qt widgets (no ctk/qMRML), so PySide6's loader builds it as Slicer would."""
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader

    handle = QFile(str(ui_file))
    assert handle.open(QFile.ReadOnly)
    loader = QUiLoader()
    widget = loader.load(handle)
    handle.close()
    assert widget is not None, loader.errorString()
    for name in ("statusLabel", "modelComboBox", "threadsSpinBox", "installButton", "loadButton",
                 "segmentEditorButton", "aboutBrowser"):
        assert widget.findChild(object, name) is not None, name


SLICER_FREE = ("background_encoder", "box_geometry", "effect_logic", "engine_session", "install_plan", "intensity",
               "model_choice", "model_download", "prefetch_benchmark", "slice_range")


QT_FREE = ("apply_benchmark", "effect_keys", "mrml_effect", "mrml_labelmap", "mrml_scene", "mrml_source",
           "self_test_scenes", "view_overlay")


@pytest.mark.parametrize("name", QT_FREE)
def test_mrml_modules_are_qt_free(name):
    """What the effect does to MRML runs on slicer-core (no Qt): the slicer_core tier imports these modules."""
    roots = {n.split(".")[0] for n in imports_of(MODULE / "QMedSAMSlicerLib" / f"{name}.py")}
    assert not roots & {"qt", "ctk", "SegmentEditorEffects", "torch"}, roots


@pytest.mark.parametrize("name", SLICER_FREE)
def test_logic_modules_are_slicer_free(name):
    roots = {n.split(".")[0] for n in imports_of(MODULE / "QMedSAMSlicerLib" / f"{name}.py")}
    assert not roots & {"slicer", "qt", "vtk", "ctk", "SegmentEditorEffects", "torch"}, roots
