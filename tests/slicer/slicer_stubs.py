"""Small stand-ins for 3D Slicer's ``slicer``, ``vtk``, ``qt`` and ``ctk`` Python modules.

Only what ``MedSAMKit.py`` touches at import time and in its Logic, with the behaviour of the real
API calls it uses (names and signatures from Slicer 5: ``vtkMRMLScalarVolumeNode.GetIJKToRASMatrix``,
``vtkMRMLMarkupsNode.GetNthControlPointPositionWorld``, ``vtkSegmentation.AddEmptySegment``,
``vtkSlicerSegmentationsModuleLogic::ImportLabelmapToSegmentationNode(labelmap, segmentation,
updatedSegmentIDs)`` where entry ``n`` of ``updatedSegmentIDs`` receives label value ``n + 1`` and
empty / unknown IDs are skipped, ...). The Widget (Qt GUI) is not exercised here.
"""

from __future__ import annotations

import itertools
import sys
import types
import unittest

import numpy as np


# ------------------------------------------------------------------------------------------------- vtk
class vtkMatrix4x4:
    def __init__(self):
        self.array = np.eye(4)

    def GetElement(self, i, j):
        return float(self.array[i, j])

    def SetElement(self, i, j, value):
        self.array[i, j] = value

    def DeepCopy(self, source):
        self.array = np.array(source.array if isinstance(source, vtkMatrix4x4) else source, float).reshape(4, 4)

    def MultiplyPoint(self, point):
        return tuple(self.array @ np.asarray(point, float))


class vtkStringArray:
    def __init__(self):
        self.values = []

    def InsertNextValue(self, value):
        self.values.append(str(value))
        return len(self.values) - 1

    def GetValue(self, index):
        return self.values[index]

    def GetNumberOfValues(self):
        return len(self.values)


class vtkVector3d(tuple):
    def __new__(cls, *xyz):
        return super().__new__(cls, (float(v) for v in (xyz[0] if len(xyz) == 1 else xyz)))


# ----------------------------------------------------------------------------------------------- MRML
_IDS = itertools.count(1)


class Node:
    className = "vtkMRMLNode"

    def __init__(self, scene, name):
        self.scene, self.name, self.attributes = scene, name, {}
        self.id = f"{self.className}{next(_IDS)}"
        self.transformId = None

    def GetName(self):
        return self.name

    def GetID(self):
        return self.id

    def GetClassName(self):
        return self.className

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def GetAttribute(self, key):
        return self.attributes.get(key)

    def SetAndObserveTransformNodeID(self, node_id):
        self.transformId = node_id

    def GetParentTransformNode(self):
        return self.scene.GetNodeByID(self.transformId) if self.transformId else None

    def CreateDefaultDisplayNodes(self):
        pass


class TransformNode(Node):
    className = "vtkMRMLLinearTransformNode"

    def __init__(self, scene, name):
        super().__init__(scene, name)
        self.to_parent, self.linear = np.eye(4), True

    def IsTransformToWorldLinear(self):
        return self.linear

    def GetMatrixTransformToWorld(self, matrix):
        parent = self.GetParentTransformNode()
        to_world = self.to_parent if parent is None else slicer_util_matrix(parent) @ self.to_parent
        matrix.DeepCopy(to_world)
        return True


def slicer_util_matrix(transform_node):
    matrix = vtkMatrix4x4()
    transform_node.GetMatrixTransformToWorld(matrix)
    return matrix.array


class ImageData:
    def __init__(self, array):
        self.array = array

    def GetDimensions(self):
        return tuple(reversed(self.array.shape[:3]))


class VolumeNode(Node):
    className = "vtkMRMLScalarVolumeNode"

    def __init__(self, scene, name):
        super().__init__(scene, name)
        self.ijk_to_ras, self.image = np.eye(4), None

    def GetImageData(self):
        return self.image

    def GetIJKToRASMatrix(self, matrix):
        matrix.DeepCopy(self.ijk_to_ras)

    def SetIJKToRASMatrix(self, matrix):
        self.ijk_to_ras = np.array(matrix.array)


class VectorVolumeNode(VolumeNode):
    className = "vtkMRMLVectorVolumeNode"


class LabelMapVolumeNode(VolumeNode):
    className = "vtkMRMLLabelMapVolumeNode"


class MarkupsFiducialNode(Node):
    className = "vtkMRMLMarkupsFiducialNode"
    PositionUndefined, PositionPreview, PositionDefined, PositionMissing = 0, 1, 2, 3

    def __init__(self, scene, name):
        super().__init__(scene, name)
        self.points = []  # [(xyz world, status)]

    def AddControlPoint(self, position, status=PositionDefined):
        self.points.append((np.asarray(position, float), status))
        return len(self.points) - 1

    def RemoveAllControlPoints(self):
        self.points = []

    def GetNumberOfControlPoints(self):
        return len(self.points)

    def GetNthControlPointPositionWorld(self, index, out):
        out[:] = self.points[index][0]

    def GetNthControlPointPosition(self, index, out):
        out[:] = self.points[index][0]

    def GetNthControlPointPositionStatus(self, index):
        return self.points[index][1]


class MarkupsROINode(Node):
    className = "vtkMRMLMarkupsROINode"

    def __init__(self, scene, name):
        super().__init__(scene, name)
        self.center, self.size, self.axes = np.zeros(3), np.zeros(3), np.eye(3)

    def GetCenterWorld(self, out):
        out[:] = self.center

    def GetSizeWorld(self, out):
        out[:] = self.size

    def GetAxisWorld(self, index, out):
        out[:] = self.axes[:, index]


class Segment:
    def __init__(self, name, color):
        self.name, self.color = name, tuple(color) if color is not None else (0.5, 0.5, 0.5)
        self.mask, self.label_value, self.ijk_to_ras, self.transform_id = None, None, None, None

    def GetName(self):
        return self.name

    def GetColor(self):
        return self.color

    def SetColor(self, r, g, b):
        self.color = (r, g, b)


class Segmentation:
    def __init__(self):
        self.segments = {}  # id -> Segment, in insertion order

    def AddEmptySegment(self, segment_id="", segment_name="", color=None):
        if not segment_id:
            number = len(self.segments) + 1
            while f"Segment_{number}" in self.segments:
                number += 1
            segment_id = f"Segment_{number}"
        self.segments[segment_id] = Segment(segment_name or segment_id, color)
        return segment_id

    def GetSegmentIdBySegmentName(self, name):
        return next((sid for sid, segment in self.segments.items() if segment.name == name), "")

    def GetSegment(self, segment_id):
        return self.segments.get(segment_id)

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegment(self, index):
        return list(self.segments.values())[index]


class SegmentationNode(Node):
    className = "vtkMRMLSegmentationNode"

    def __init__(self, scene, name):
        super().__init__(scene, name)
        self.segmentation, self.reference_volume = Segmentation(), None

    def GetSegmentation(self):
        return self.segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume_node):
        self.reference_volume = volume_node


class Scene:
    classes = {cls.className: cls for cls in (TransformNode, VolumeNode, VectorVolumeNode, LabelMapVolumeNode,
                                              MarkupsFiducialNode, MarkupsROINode, SegmentationNode)}
    StartCloseEvent, EndCloseEvent = 8, 9

    def __init__(self):
        self.nodes, self.removed = [], []

    def AddNewNodeByClass(self, class_name, name=""):
        node = self.classes[class_name](self, name or class_name)
        self.nodes.append(node)
        return node

    def RemoveNode(self, node):
        self.nodes.remove(node)
        self.removed.append(node)

    def GetNodeByID(self, node_id):
        return next((n for n in self.nodes if n.id == node_id), None)

    def Clear(self, *unused):
        self.nodes = []


class SegmentationsLogic:
    def ImportLabelmapToSegmentationNode(self, labelmap_node, segmentation_node, updated_ids):
        labels = labelmap_node.image.array
        for index in range(updated_ids.GetNumberOfValues()):
            segment = segmentation_node.GetSegmentation().GetSegment(updated_ids.GetValue(index))
            if segment is None:
                continue  # empty or unknown ids are skipped, as in Slicer
            segment.label_value, segment.mask = index + 1, labels == index + 1
            segment.ijk_to_ras, segment.transform_id = np.array(labelmap_node.ijk_to_ras), labelmap_node.transformId
        return True


# ------------------------------------------------------------------------------------------ slicer.util
def arrayFromVolume(volume_node):
    return volume_node.image.array


def updateVolumeFromArray(volume_node, array):
    volume_node.image = ImageData(np.array(array))


def addVolumeFromArray(array, ijkToRAS=None, name=None, nodeClassName=None):
    node = SCENE.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
    if ijkToRAS is not None:
        node.ijk_to_ras = np.array(ijkToRAS, float)
    updateVolumeFromArray(node, array)
    return node


def arrayFromVTKMatrix(matrix):
    return np.array(matrix.array)


def vtkMatrixFromArray(array):
    matrix = vtkMatrix4x4()
    matrix.DeepCopy(np.asarray(array, float))
    return matrix


def arrayFromMarkupsControlPoints(markups_node, world=False):
    positions = np.zeros((markups_node.GetNumberOfControlPoints(), 3))
    for index in range(len(positions)):
        getter = markups_node.GetNthControlPointPositionWorld if world else markups_node.GetNthControlPointPosition
        getter(index, positions[index, :])
    return positions


def getNodesByClass(class_name):
    return [n for n in SCENE.nodes if n.className == class_name]


class VTKObservationMixin:
    def __init__(self):
        self.Observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self.Observations.append([obj, event, method, group, None, priority])

    def removeObservers(self, method=None):
        self.Observations = [o for o in self.Observations if method is not None and o[2] != method]


# --------------------------------------------------------------------------- ScriptedLoadableModule
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=1000):
        pass


SCENE = Scene()


def install() -> dict[str, types.ModuleType | None]:
    """Put the stand-ins into ``sys.modules``; returns what they replaced (for :func:`uninstall`)."""
    names = ("slicer", "slicer.util", "slicer.ScriptedLoadableModule", "vtk", "qt", "ctk")
    previous = {name: sys.modules.get(name) for name in names}
    vtk = types.ModuleType("vtk")
    vtk.vtkMatrix4x4, vtk.vtkStringArray, vtk.vtkVector3d = vtkMatrix4x4, vtkStringArray, vtkVector3d
    util = types.ModuleType("slicer.util")
    for function in (arrayFromVolume, updateVolumeFromArray, addVolumeFromArray, arrayFromVTKMatrix,
                     vtkMatrixFromArray, arrayFromMarkupsControlPoints, getNodesByClass):
        setattr(util, function.__name__, function)
    util.VTKObservationMixin = VTKObservationMixin
    loadable = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(loadable, cls.__name__, cls)
    slicer = types.ModuleType("slicer")
    slicer.__path__ = []  # a package, so ``from slicer.util import ...`` resolves
    slicer.util, slicer.ScriptedLoadableModule, slicer.mrmlScene = util, loadable, SCENE
    slicer.modules = types.SimpleNamespace(segmentations=types.SimpleNamespace(logic=SegmentationsLogic))
    sys.modules.update({"slicer": slicer, "slicer.util": util, "slicer.ScriptedLoadableModule": loadable,
                        "vtk": vtk, "qt": types.ModuleType("qt"), "ctk": types.ModuleType("ctk")})
    return previous


def uninstall(previous: dict[str, types.ModuleType | None]) -> None:
    for name, module in previous.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
