"""Volumes and their boxes: the light readers and writers (nibabel for NIfTI, pynrrd for NRRD) give exactly the
voxels and geometry SimpleITK gives, and SimpleITK reads back exactly what they write."""

import json
import sys

import nibabel
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from qmedsam.errors import QMedSAMError
from qmedsam.volume_io import Volume, read_boxes_json, read_volume, write_label_image


def _rotation(axis: int, angle: float) -> np.ndarray:
    first, second = (a for a in range(3) if a != axis)
    matrix = np.eye(3)
    matrix[[first, second, first, second], [first, second, second, first]] = [np.cos(angle), np.cos(angle),
                                                                              -np.sin(angle), np.sin(angle)]
    return matrix


# direction (columns = LPS axes of voxel x, y, z), spacing, origin
GEOMETRIES = {
    "aligned anisotropic": (np.eye(3), (0.7, 0.8, 5.0), (-120.5, 33.25, -7.0)),
    "flipped": (np.diag([-1.0, 1.0, -1.0]), (0.57, 0.57, 2.5), (10.0, -20.0, 30.0)),
    # index x runs along physical -y, index y along +x, index z along -z
    "permuted": (np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, -1]]), (0.8, 1.5, 3.0), (12.5, -40.0, 7.0)),
    "oblique": (_rotation(0, 0.3) @ _rotation(2, -0.7), (1.1, 0.9, 3.3), (5.5, -6.25, 100.125)),
}
LIGHT_SUFFIXES = (".nii", ".nii.gz", ".nrrd")


def _simpleitk_image(array: np.ndarray, direction, spacing, origin) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetDirection(np.ravel(direction).tolist())
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _read_with_simpleitk(path) -> sitk.Image:
    """What the SimpleITK path gave: ReadImage, a 2D image joined into one slice."""
    image = sitk.ReadImage(str(path))
    return sitk.JoinSeries(image) if image.GetDimension() == 2 else image


def _assert_same_as_simpleitk(volume: Volume, image: sitk.Image) -> None:
    expected = sitk.GetArrayFromImage(image)
    assert volume.array.dtype == expected.dtype
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.spacing == image.GetSpacing()
    assert volume.origin == image.GetOrigin()
    assert tuple(volume.direction.ravel()) == image.GetDirection()


@pytest.mark.parametrize("suffix", LIGHT_SUFFIXES + (".mha",))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_volume_written_by_simpleitk_reads_as_simpleitk_reads_it(tmp_path, geometry, dtype, suffix):
    array = np.random.default_rng(0).integers(-100, 200, (5, 7, 9)).astype(dtype)  # (z, y, x)
    path = tmp_path / f"volume{suffix}"
    sitk.WriteImage(_simpleitk_image(array, *geometry), str(path), suffix != ".nii")
    _assert_same_as_simpleitk(read_volume(path), _read_with_simpleitk(path))


@pytest.mark.parametrize("suffix", LIGHT_SUFFIXES + (".mha",))
def test_2d_image_reads_as_the_one_slice_volume_simpleitk_joins(tmp_path, suffix):
    array = np.arange(48, dtype=np.int16).reshape(6, 8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.3, 0.6))
    image.SetOrigin((4.0, -2.0))
    image.SetDirection((0.0, 1.0, 1.0, 0.0))
    path = tmp_path / f"slice{suffix}"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    assert volume.array.shape == (1, 6, 8) and volume.spacing == pytest.approx((0.3, 0.6, 1.0))
    _assert_same_as_simpleitk(volume, _read_with_simpleitk(path))


def test_shared_3d_cases_read_as_simpleitk_reads_them(tmp_path, shared_data):
    """The real CT and MR volumes, with their own anisotropic spacing, flipped in x and z."""
    for case in sorted((shared_data / "imgs").glob("3D*.npz")):
        with np.load(case) as arrays:
            image = _simpleitk_image(arrays["imgs"], np.diag([-1.0, 1.0, -1.0]),
                                     [float(v) for v in arrays["spacing"]], (-100.0, 50.5, 12.0))
        for suffix in (".nii.gz", ".nrrd"):
            path = tmp_path / f"{case.stem}{suffix}"
            sitk.WriteImage(image, str(path), True)
            _assert_same_as_simpleitk(read_volume(path), _read_with_simpleitk(path))


# NIfTI as other tools write it: ITK takes the sform or the qform depending on both codes (and reads an
# unlabelled sform as absent), scales intensities, converts units and drops a trailing single time point.
AFFINE = np.eye(4)
AFFINE[:3, :3] = _rotation(1, 0.4) @ np.diag([0.8, 0.9, 4.0])
AFFINE[:3, 3] = [10.0, -20.0, 30.0]
SHIFTED = AFFINE + np.pad(np.full((3, 1), 5.0), ((0, 1), (3, 0)))
NIFTI_HEADERS = {
    **{f"qform {q} sform {s} {name}": dict(qform=q, sform=s, sform_affine=affine)
       for q in range(5) for s in range(5) for name, affine in (("same", AFFINE), ("shifted", SHIFTED))},
    "int16 scaled": dict(scale=(2.0, -1024.0)),
    "float32 scaled": dict(dtype=np.float32, scale=(0.5, 3.0)),
    "4D with one time point": dict(shape=(9, 7, 5, 1)),
    "metres": dict(units="meter"),
    "microns": dict(units="micron"),
    "big-endian": dict(dtype=">i2"),
    "2D": dict(shape=(9, 7)),
}


@pytest.mark.parametrize("settings", NIFTI_HEADERS.values(), ids=NIFTI_HEADERS.keys())
def test_nifti_written_by_nibabel_reads_as_simpleitk_reads_it(tmp_path, settings):
    shape = settings.get("shape", (9, 7, 5))
    array = np.random.default_rng(1).integers(-1000, 1000, shape).astype(settings.get("dtype", np.int16))
    image = nibabel.Nifti1Image(array, None)
    image.header.set_qform(AFFINE, code=settings.get("qform", 1))
    image.header.set_sform(settings.get("sform_affine", AFFINE), code=settings.get("sform", 1))
    image.header.set_xyzt_units(settings.get("units", "mm"))
    if "scale" in settings:
        image.header.set_slope_inter(*settings["scale"])
    path = tmp_path / "volume.nii.gz"
    nibabel.save(image, str(path))
    _assert_same_as_simpleitk(read_volume(path), _read_with_simpleitk(path))


NRRD_HEADERS = {
    "RAS space": {"space": "right-anterior-superior"},
    "LAS space": {"space": "left-anterior-superior"},
    "LPS space": {"space": "left-posterior-superior"},
    "spacings only": {"spacings": [0.5, 0.6, 3.0]},
    "negative spacing": {"spacings": [-0.5, 0.6, 3.0]},  # ITK flips that axis's direction
    "no geometry": {},
}


@pytest.mark.parametrize("header", NRRD_HEADERS.values(), ids=NRRD_HEADERS.keys())
def test_nrrd_written_by_pynrrd_reads_as_simpleitk_reads_it(tmp_path, header):
    if "space" in header:
        header = {**header, "space directions": AFFINE[:3, :3].T, "space origin": AFFINE[:3, 3],
                  "kinds": ["domain"] * 3}
    path = tmp_path / "volume.nrrd"
    nrrd.write(str(path), np.random.default_rng(2).integers(0, 900, (5, 7, 9)).astype(np.uint16), header,
               index_order="C")
    _assert_same_as_simpleitk(read_volume(path), _read_with_simpleitk(path))


@pytest.mark.parametrize("suffix", LIGHT_SUFFIXES + (".mha",))
@pytest.mark.parametrize("geometry", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_labels_written_read_back_by_simpleitk_as_simpleitk_wrote_them(tmp_path, geometry, suffix):
    """What Slicer and other ITK tools see. NIfTI stores the geometry in single precision, and ITK rounds an
    oblique direction through its own orthogonalisation: there the two files agree to 1e-7."""
    direction, spacing, origin = geometry
    labels = (np.arange(5 * 7 * 9).reshape(5, 7, 9) % 3).astype(np.uint8)
    ours, theirs = tmp_path / f"ours{suffix}", tmp_path / f"theirs{suffix}"
    write_label_image(ours, labels, Volume(np.zeros_like(labels), spacing, origin, direction))
    sitk.WriteImage(_simpleitk_image(labels, direction, spacing, origin), str(theirs), True)
    ours, theirs = sitk.ReadImage(str(ours)), sitk.ReadImage(str(theirs))
    assert ours.GetPixelID() == theirs.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), labels)
    assert ours.GetSpacing() == theirs.GetSpacing() and ours.GetOrigin() == theirs.GetOrigin()
    if np.isin(direction, (-1.0, 0.0, 1.0)).all():
        assert ours.GetDirection() == theirs.GetDirection()
    else:
        np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), rtol=0, atol=1e-7)


def test_physical_boxes_map_through_the_geometry_simpleitk_uses(tmp_path):
    direction, spacing, origin = GEOMETRIES["permuted"]
    array = np.random.default_rng(1).integers(-1000, 1000, (6, 9, 11)).astype(np.int16)  # (z, y, x)
    image = _simpleitk_image(array, direction, spacing, origin)
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    wanted = [[2, 1, 1, 7, 5, 4], [0, 3, 0, 10, 8, 5]]  # voxel boxes x_min, y_min, z_min, x_max, y_max, z_max
    boxes = []
    for box in wanted:
        corners = np.array([image.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner])
                            for corner in (box[:3], box[3:])])
        boxes.append({"min": corners.min(axis=0).tolist(), "max": corners.max(axis=0).tolist(), "name": "x"})
    boxes_path = tmp_path / "ct.boxes.json"
    boxes_path.write_text(json.dumps({"coordinates": "physical", "boxes": boxes}))
    np.testing.assert_allclose(read_boxes_json(boxes_path, volume), wanted, atol=1e-6)
    boxes_path.write_text(json.dumps({"coordinates": "voxel", "boxes": [{"min": [2, 1, 1], "max": [7, 5, 4]}]}))
    np.testing.assert_array_equal(read_boxes_json(boxes_path, volume), wanted[:1])


def test_label_image_is_written_once_and_must_fit(tmp_path):
    direction, spacing, origin = GEOMETRIES["flipped"]
    volume = Volume(np.zeros((6, 9, 11), np.int16), spacing, origin, direction)
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[1:5, 1:6, 2:8] = 1
    out = tmp_path / "out" / "ct_labels.nii.gz"
    out.parent.mkdir()
    write_label_image(out, labels, volume)
    with pytest.raises(QMedSAMError, match="already exists; pass --overwrite"):
        write_label_image(out, labels, volume)
    with pytest.raises(QMedSAMError, match="do not fit the reference"):
        write_label_image(out, labels[:-1], volume, overwrite=True)
    with pytest.raises(QMedSAMError, match="do not fit the reference"):
        write_label_image(out, labels.astype(np.int16), volume, overwrite=True)
    assert sorted(p.name for p in out.parent.iterdir()) == ["ct_labels.nii.gz"]
    np.testing.assert_array_equal(read_volume(out).array, labels)


@pytest.mark.parametrize("module, suffix, package", [("SimpleITK", ".mha", "SimpleITK"),
                                                     ("SimpleITK", ".tif", "SimpleITK"),
                                                     ("nibabel", ".nii.gz", "nibabel"), ("nrrd", ".nrrd", "pynrrd")])
def test_missing_reader_package_is_named(tmp_path, monkeypatch, module, suffix, package):
    path = tmp_path / f"volume{suffix}"
    path.write_bytes(b"any")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail as where it is not installed
    message = f"^Files like {path.name} need the {package} package: pip install {package}$"
    with pytest.raises(QMedSAMError, match=message):
        read_volume(path)


def _write_bad_volume(path, kind):
    if kind == "vector":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True), str(path))
    elif kind == "4D":
        sitk.WriteImage(sitk.Image([4, 4, 3, 2], sitk.sitkFloat32), str(path))
    elif kind == "garbage":
        path.write_bytes(b"not an image at all")


BAD_VOLUME_FILES = {
    "missing": (None, "does not exist"),
    "garbage": ("garbage", "Cannot read .* as a (NIfTI|NRRD|SimpleITK) image"),
    "vector": ("vector", "3 values per voxel"),
    "4D": ("4D", r"4D image of size \(4, 4, 3, 2\); expected a 3D volume"),
}


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("kind, phrase", BAD_VOLUME_FILES.values(), ids=BAD_VOLUME_FILES.keys())
def test_bad_volume_file_is_refused(tmp_path, kind, phrase, suffix):
    path = tmp_path / f"volume{suffix}"
    _write_bad_volume(path, kind)
    with pytest.raises(QMedSAMError, match=phrase):
        read_volume(path)


A_VOLUME = Volume(np.zeros((4, 8, 10), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
VALID_BOX = {"min": [1, 1, 0], "max": [5, 5, 3]}
BAD_BOX_JSON = {
    "not JSON": ("{'coordinates': 'voxel'", "not valid JSON: .* line 1, column 2"),
    "list at top": ([VALID_BOX], r"at \$: expected an object"),
    "no coordinates": ({"boxes": [VALID_BOX]},
                       r"at \$.coordinates: expected \"voxel\" or \"physical\", got null"),
    "bad coordinates": ({"coordinates": "ras", "boxes": [VALID_BOX]}, r"\$.coordinates: .* got \"ras\""),
    "boxes not list": ({"coordinates": "voxel", "boxes": VALID_BOX}, r"at \$.boxes: expected a list"),
    "no boxes": ({"coordinates": "voxel", "boxes": []}, r"at \$.boxes: no boxes"),
    "box not object": ({"coordinates": "voxel", "boxes": [[1, 2, 3]]},
                       r"at \$.boxes\[0\]: expected an object"),
    "missing max": ({"coordinates": "voxel", "boxes": [VALID_BOX, {"min": [1, 1, 1]}]},
                    r"at \$.boxes\[1\].max: expected a list of 3 numbers"),
    "2 coordinates": ({"coordinates": "voxel", "boxes": [{"min": [1, 1], "max": [5, 5, 3]}]},
                      r"at \$.boxes\[0\].min: expected a list of 3 numbers \[x, y, z\], got \[1, 1\]"),
    "text coordinate": ({"coordinates": "voxel", "boxes": [{"min": [1, "1", 0], "max": [5, 5, 3]}]},
                        r"at \$.boxes\[0\].min\[1\]: expected a finite number, got \"1\""),
    "bool coordinate": ({"coordinates": "voxel", "boxes": [{"min": [1, 1, 0], "max": [5, True, 3]}]},
                        r"\$.boxes\[0\].max\[1\]: expected a finite number, got true"),
    "NaN coordinate": ('{"coordinates": "voxel", "boxes": [{"min": [1, 1, NaN], "max": [5, 5, 3]}]}',
                       r"\$.boxes\[0\].min\[2\]: expected a finite number"),
    "unknown key": ({"coordinates": "voxel", "boxes": [{**VALID_BOX, "label": 3}]}, "unknown key.* label"),
    "name not text": ({"coordinates": "voxel", "boxes": [{**VALID_BOX, "name": 3}]},
                      r"\.name: expected text"),
    "inverted box": ({"coordinates": "voxel", "boxes": [{"min": [5, 1, 0], "max": [1, 5, 3]}]},
                     r"voxel coordinates\): Box 0 \(label 1\) is empty or inverted: x_min=5"),
    "outside volume": ({"coordinates": "voxel", "boxes": [{"min": [1, 1, 10], "max": [5, 5, 12]}]},
                       "entirely outside the volume"),
}


@pytest.mark.parametrize("content, phrase", BAD_BOX_JSON.values(), ids=BAD_BOX_JSON.keys())
def test_bad_boxes_json_is_refused(tmp_path, content, phrase):
    path = tmp_path / "boxes.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(QMedSAMError, match=phrase):
        read_boxes_json(path, A_VOLUME)


@pytest.mark.parametrize("make, phrase", [(None, "does not exist"), ("folder", "is a folder")])
def test_missing_boxes_json_is_refused(tmp_path, make, phrase):
    path = tmp_path / "boxes.json"
    if make == "folder":
        path.mkdir()
    with pytest.raises(QMedSAMError, match=phrase):
        read_boxes_json(path, A_VOLUME)
