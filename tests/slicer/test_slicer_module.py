"""MedSAMKit.py imported over stand-in Slicer modules: the Logic's conversions and result import, and the
extension's files (the .ui names the Widget uses, CMake lists, icon)."""

from __future__ import annotations

import re
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import MODULE_DIR
from MedSAMKitLib import LabelInfo, LabelMapResult, MedSAMKitError, ServerInfo, UploadedVolume, write_nrrd
from MedSAMKitLib.geometry import ijk_to_ras, matrix_to_geometry

from medsam_kit.io import Geometry
from medsam_kit.prompts.user_file import parse_prompts

SHAPE = (10, 40, 50)
LABELS = (LabelInfo(1, "LV", (31, 119, 180)), LabelInfo(2, "MYO", (255, 127, 14)))
INFO = ServerInfo(api_version=1, version="0.1.0", model_name="tiny", image_size=64, in_channels=1, num_classes=2,
                  channels=("channel_0",), accepted_channels=(1,), labels=LABELS, max_upload_bytes=1 << 30,
                  formats=("seg.nrrd",), coordinates=("voxel", "world"))


def add_volume(scene, matrix, array=None, class_name="vtkMRMLScalarVolumeNode", name="CT chest"):
    import slicer_stubs

    node = scene.AddNewNodeByClass(class_name, name)
    node.ijk_to_ras = np.array(matrix)
    slicer_stubs.updateVolumeFromArray(node, np.zeros(SHAPE, np.int16) if array is None else array)
    return node


def add_transform(scene, to_parent):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.to_parent = np.array(to_parent, float)
    return node


def rigid(angle_deg=15.0, shift=(5.0, -3.0, 7.0)):
    a = np.deg2rad(angle_deg)
    matrix = np.eye(4)
    matrix[:3, :3] = [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]
    matrix[:3, 3] = shift
    return matrix


# ------------------------------------------------------------------------------------------ the module
def test_module_imports_with_its_four_classes(medsamkit):
    import slicer_stubs

    parent = types.SimpleNamespace()
    medsamkit.MedSAMKit(parent)
    assert parent.title == "MedSAM Kit" and parent.categories == ["Segmentation"]
    assert issubclass(medsamkit.MedSAMKit, slicer_stubs.ScriptedLoadableModule)
    assert issubclass(medsamkit.MedSAMKitWidget, slicer_stubs.ScriptedLoadableModuleWidget)
    assert issubclass(medsamkit.MedSAMKitLogic, slicer_stubs.ScriptedLoadableModuleLogic)
    assert issubclass(medsamkit.MedSAMKitTest, slicer_stubs.ScriptedLoadableModuleTest)
    assert {"test_GeometryMatchesSlicer", "test_ServerFlows"} <= set(dir(medsamkit.MedSAMKitTest))


# --------------------------------------------------------------------------------- Slicer -> numpy
def test_world_matrix_includes_linear_parent_transforms(scene, medsamkit, oblique):
    volume = add_volume(scene, oblique)
    logic = medsamkit.MedSAMKitLogic()
    np.testing.assert_array_equal(logic.volumeIjkToRas(volume), oblique)
    outer = add_transform(scene, rigid(-5.0, (0.0, 10.0, 0.0)))
    inner = add_transform(scene, rigid())
    inner.SetAndObserveTransformNodeID(outer.GetID())
    volume.SetAndObserveTransformNodeID(inner.GetID())
    np.testing.assert_allclose(logic.volumeIjkToRas(volume), outer.to_parent @ inner.to_parent @ oblique, atol=1e-12)
    inner.linear = False
    with pytest.raises(ValueError, match="'CT chest' is under a non-linear transform; harden it first"):
        logic.volumeIjkToRas(volume)


def test_markups_become_prompts_on_the_right_voxels(scene, medsamkit, oblique):
    import slicer_stubs

    volume = add_volume(scene, oblique)
    include = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    include.AddControlPoint(ijk_to_ras([12, 30, 4], oblique))
    include.AddControlPoint(ijk_to_ras([1, 1, 1], oblique), status=slicer_stubs.MarkupsFiducialNode.PositionPreview)
    exclude = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    exclude.AddControlPoint(ijk_to_ras([40.25, 5.5, 4.2], oblique))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    steps = np.linalg.norm(oblique[:3, :3], axis=0)
    roi.center, roi.axes = ijk_to_ras([20, 24, 6], oblique), oblique[:3, :3] / steps
    roi.size = 2 * np.array([4, 5, 0.5]) * steps  # edges at i 16..24, j 19..29

    logic = medsamkit.MedSAMKitLogic()
    logic.info = INFO
    document = logic.promptDocument(volume, "MYO", include, exclude, roi)
    assert document["coordinates"] == "voxel"
    prompts = parse_prompts(document, SHAPE, Geometry.from_affine_ras(oblique), {0: "bg", 1: "LV", 2: "MYO"})
    assert prompts.slices(2) == [4, 6]  # the preview point (slice 1) is not a prompt
    np.testing.assert_allclose(prompts.get(2, 4).point_coords, [[12, 30], [40.25, 5.5]], atol=1e-6)
    np.testing.assert_array_equal(prompts.get(2, 4).point_labels, [1, 0])
    np.testing.assert_allclose(prompts.get(2, 6).boxes[0].as_tuple(), (16.5, 19.5, 24.5, 29.5), atol=1e-6)

    roi.size = np.zeros(3)  # an ROI not placed yet is no prompt
    assert list(logic.promptDocument(volume, "MYO", include, None, roi)["labels"]["MYO"]) == ["4"]
    with pytest.raises(ValueError, match="no structure 'RV'; it has LV, MYO"):
        logic.promptDocument(volume, "RV", include)
    with pytest.raises(ValueError, match="CT chest: no prompts for 'LV'"):
        logic.promptDocument(volume, "LV")


def test_volume_input_copies_voxels_and_stacks_channels(scene, medsamkit, oblique):
    logic = medsamkit.MedSAMKitLogic()
    array = np.random.default_rng(0).integers(0, 100, SHAPE).astype(np.int16)
    volume = add_volume(scene, oblique, array, name="T1 / post-contrast")
    first = logic.volumeInput(volume)
    assert first.shapeZyx == SHAPE and first.channels == 1 and first.fileName() == "T1_post-contrast.nrrd"
    volume.image.array[0, 0, 0] += 1  # editing the volume after the click does not change what is sent...
    assert first.array[0, 0, 0] == array[0, 0, 0]
    assert logic.volumeInput(volume).key != first.key  # ...but the next click uploads the new content
    second = add_volume(scene, oblique, array + 1, name="T2")
    stacked = logic.volumeInput(volume, [second, None])
    assert stacked.channels == 2 and stacked.array.shape == (*SHAPE, 2)
    vector = add_volume(scene, oblique, np.zeros((*SHAPE, 3), np.float32), "vtkMRMLVectorVolumeNode", "rgb")
    assert logic.volumeInput(vector).channels == 3
    with pytest.raises(ValueError, match="already has 3 components"):
        logic.volumeInput(vector, [second])
    elsewhere = add_volume(scene, rigid() @ oblique, array, name="T2 moved")
    with pytest.raises(ValueError, match="'T2 moved' is not on the grid of 'T1 / post-contrast'"):
        logic.volumeInput(volume, [elsewhere])
    with pytest.raises(ValueError, match="select an input volume"):
        logic.volumeInput(None)
    sheared = oblique.copy()
    sheared[:3, 1] += 0.2 * sheared[:3, 0]  # j axis leaning towards i: a gantry-tilt CT grid
    with pytest.raises(ValueError, match="'tilted' lies on a sheared grid .* resample it onto a regular grid"):
        logic.volumeInput(add_volume(scene, sheared, array, name="tilted"))


# -------------------------------------------------------------------------------- results -> Slicer
def outcome(medsamkit, labels, matrix, only=None):
    return medsamkit.SegmentationOutcome(labels, matrix, LABELS, {"seconds": 0.1, "encoded_slices": 0}, only, 0.1)


def test_label_map_becomes_named_coloured_segments(scene, medsamkit, oblique):
    volume = add_volume(scene, oblique)
    volume.SetAndObserveTransformNodeID(add_transform(scene, rigid()).GetID())
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:4, 10:20, 10:20] = 1
    labels[5, 30:35, 5:9] = 2
    logic = medsamkit.MedSAMKitLogic()
    node = logic.applySegmentation(outcome(medsamkit, labels, oblique), volume)
    assert node.GetName() == "CT chest MedSAM" and node.reference_volume is volume
    assert node.transformId == volume.transformId  # the segments follow the volume's transform
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(n).GetName() for n in range(2)] == ["LV", "MYO"]
    lv, myo = (segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(n)) for n in ("LV", "MYO"))
    np.testing.assert_allclose(lv.GetColor(), (31 / 255, 119 / 255, 180 / 255))
    np.testing.assert_array_equal(lv.mask, labels == 1)
    np.testing.assert_array_equal(myo.mask, labels == 2)
    np.testing.assert_array_equal(lv.ijk_to_ras, oblique)  # imported on the volume's own grid: no resampling
    assert lv.transform_id == volume.transformId
    assert [n.className for n in scene.removed] == ["vtkMRMLLabelMapVolumeNode"]  # the temporary label map
    assert not [n for n in scene.nodes if n.className == "vtkMRMLLabelMapVolumeNode"]

    # A prompted answer for MYO replaces MYO only; LV keeps its voxels, no segment is duplicated.
    lv_before = lv.mask.copy()
    relabelled = np.zeros(SHAPE, np.uint8)
    relabelled[7, 1:4, 1:4] = 2
    relabelled[0, 0, 0] = 1  # ignored: LV was not prompted
    logic.applySegmentation(outcome(medsamkit, relabelled, oblique, only=[2]), volume, node)
    assert segmentation.GetNumberOfSegments() == 2
    np.testing.assert_array_equal(myo.mask, relabelled == 2)
    np.testing.assert_array_equal(lv.mask, lv_before)


# ------------------------------------------------------------------------------ server work, fake client
class FakeClient:
    """Stands in for MedSAMKitClient in Logic tests: records uploads, answers label maps as NRRD bytes."""

    def __init__(self, answer_matrix, lose_volume_once=False, layers=None):
        self.url, self.uploads = "http://fake:1", []
        self.answer_matrix, self.lose_once, self.layers = answer_matrix, lose_volume_once, layers

    def upload(self, data, filename, progress=None):
        from MedSAMKitLib.nrrd import read_nrrd

        image = read_nrrd(data)
        self.uploads.append(filename)
        return UploadedVolume(f"id{len(self.uploads)}", image.array.shape[:3], 1, matrix_to_geometry(image.ijk_to_ras))

    def auto(self, volume_id, output="seg.nrrd", progress=None):
        if self.lose_once:
            self.lose_once = False
            raise MedSAMKitError("server refused segmenting (HTTP 404): volume evicted", status=404)
        labels = np.ones(SHAPE if self.layers is None else (*SHAPE, self.layers), np.uint8)
        return LabelMapResult(write_nrrd(labels, self.answer_matrix), "labels.nrrd", LABELS, {"encoded_slices": 3})


def test_logic_uploads_once_and_again_after_the_server_lost_the_volume(scene, medsamkit, oblique):
    logic = medsamkit.MedSAMKitLogic()
    logic.client, logic.info = FakeClient(oblique), INFO
    volume_input = logic.volumeInput(add_volume(scene, oblique))
    first = logic.requestSegmentation(volume_input)
    assert logic.client.uploads == ["CT_chest.nrrd"] and first.onlyValues is None
    assert first.labels.shape == SHAPE and first.summary().endswith("3 slices encoded")
    logic.requestSegmentation(volume_input)
    assert len(logic.client.uploads) == 1  # same content: the server's id is reused
    logic.client.lose_once = True
    logic.requestSegmentation(volume_input)
    assert len(logic.client.uploads) == 2  # 404 -> uploaded again, once, transparently


def test_logic_refuses_answers_on_another_grid_and_oversized_uploads(scene, medsamkit, oblique):
    logic = medsamkit.MedSAMKitLogic()
    shifted = oblique.copy()
    shifted[1, 3] += 2.0
    logic.client, logic.info = FakeClient(shifted), INFO
    volume_input = logic.volumeInput(add_volume(scene, oblique))
    with pytest.raises(MedSAMKitError, match="returned the label map on another grid than CT chest .*origin"):
        logic.requestSegmentation(volume_input)
    logic.client = FakeClient(oblique, layers=1)  # a one-layer .seg.nrrd (layer axis of length 1) is fine...
    assert logic.requestSegmentation(volume_input).labels.shape == SHAPE
    logic.client = FakeClient(oblique, layers=2)  # ...overlapping layers are not one label map
    with pytest.raises(MedSAMKitError, match="2 overlapping segment layers"):
        logic.requestSegmentation(volume_input)
    logic.info = ServerInfo(**{**INFO.__dict__, "max_upload_bytes": 100})
    other = logic.volumeInput(add_volume(scene, oblique, np.ones(SHAPE, np.int16), name="big"))
    with pytest.raises(MedSAMKitError, match=r"'big' is [\d.]+ (bytes|kB) as NRRD, over the server's upload "
                                             r"limit of 100 bytes: crop it"):
        logic.ensureUploaded(other)
    logic.client = None
    with pytest.raises(MedSAMKitError, match="not connected"):
        logic.ensureUploaded(other)


def test_logic_refuses_the_wrong_channel_count_before_uploading(scene, medsamkit, oblique):
    logic = medsamkit.MedSAMKitLogic()
    brats = ServerInfo(**{**INFO.__dict__, "in_channels": 4, "channels": ("t1n", "t1c", "t2w", "t2f"),
                          "accepted_channels": (4,)})
    logic.client, logic.info = FakeClient(oblique), brats
    scalar = logic.volumeInput(add_volume(scene, oblique, name="T1"))
    with pytest.raises(MedSAMKitError, match=r"'T1' has 1 channel\(s\) but the model takes 4 — the model's channels "
                                             r"are t1n, t1c, t2w, t2f: select one volume per channel") as caught:
        logic.requestSegmentation(scalar)
    assert caught.value.kind == "usage" and logic.client.uploads == []  # nothing packed or sent
    stacked = logic.volumeInput(add_volume(scene, oblique, name="T1"),
                                [add_volume(scene, oblique, name=f"c{n}") for n in range(3)])
    assert logic.ensureUploaded(stacked) == "id1" and logic.client.uploads == ["T1.nrrd"]


# ------------------------------------------------------------------------------------ extension files
def test_ui_file_declares_every_widget_the_module_uses():
    source = (MODULE_DIR / "MedSAMKit.py").read_text(encoding="utf-8")
    tree = ET.parse(MODULE_DIR / "Resources" / "UI" / "MedSAMKit.ui")
    names = {w.get("name") for w in tree.iter("widget")} | {lay.get("name") for lay in tree.iter("layout")}
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= names, f"missing in the .ui: {sorted(used - names)}"
    classes = {w.get("class") for w in tree.iter("widget")}
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    qt_own = {c for c in classes if c.startswith("Q")}
    assert classes - qt_own <= declared, f"custom widgets without a declaration: {classes - qt_own - declared}"
    assert {"qSlicerMarkupsPlaceWidget", "qMRMLNodeComboBox"} <= classes


def test_cmake_ships_every_library_file_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    for path in sorted((MODULE_DIR / "MedSAMKitLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} is not in MODULE_PYTHON_SCRIPTS"
    for resource in re.findall(r"Resources/\S+", cmake):
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "MedSAMKit")).is_file(), resource
    extension = (MODULE_DIR.parent / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "add_subdirectory(MedSAMKit)" in extension and "slicerMacroBuildScriptedModule" in cmake
    assert (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_icon_is_a_small_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "MedSAMKit.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_library_never_imports_slicer():
    for path in Path(MODULE_DIR / "MedSAMKitLib").glob("*.py"):
        imports = re.findall(r"^\s*(?:import|from)\s+(\w+)", path.read_text(encoding="utf-8"), flags=re.M)
        assert not {"slicer", "vtk", "qt", "ctk", "requests", "torch"} & set(imports), path.name
