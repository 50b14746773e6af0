"""MedSAMKit: 3D Slicer scripted module that segments with a ``medsam-kit serve`` server.

The model runs in the server (same workstation or a GPU box); Slicer's Python installs nothing:
this module and ``MedSAMKitLib`` use only the standard library, numpy and Slicer. Flow:

1. **Connect**: ``GET /v1/health`` and ``/v1/info`` (model, channels, label names and colours).
2. **Upload**: the input volume's voxels (``arrayFromVolume``, ``(K, J, I)``) and its IJKToRAS matrix
   (with a linear parent transform applied) are written as an in-memory NRRD and uploaded once; the
   server's id is reused while the voxels and geometry stay the same (keyed by a content hash).
3. **Prompt**: include / exclude points (markups point lists) and an ROI box (markups ROI), all RAS,
   become a prompt document in voxel coordinates (``MedSAMKitLib.geometry.prompt_document``).
4. **Segment** (or **Auto-segment all**): the server answers with a ``.seg.nrrd`` label map on the
   uploaded grid; it is checked against the volume's grid and imported into a Segmentation node,
   one segment per label with the model's names and colours.

Requests run in a worker thread polled by a Qt timer, so Slicer stays responsive and shows progress.
Method names are camelCase, as in Slicer's own API; ``MedSAMKitLib`` is snake_case Python.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time

import ctk  # noqa: F401 - loaded for the .ui file's ctk widgets, as Slicer's module template does
import numpy as np
import qt
import slicer
import vtk
from MedSAMKitLib import (
    DEFAULT_URL,
    BackgroundCall,
    MedSAMKitClient,
    MedSAMKitError,
    RoiBox,
    format_size,
    geometry_to_matrix,
    grid_difference,
    keep_values,
    prompt_document,
    segment_id_table,
    segments_from_labelmap,
    shear,
    stack_channels,
    write_nrrd,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

ROLE_ATTRIBUTE = "MedSAMKit.Role"  # marks the markups nodes this module created (include / exclude / box)
_SETTINGS_URL = "MedSAMKit/ServerURL"
_SETTINGS_TIMEOUT = "MedSAMKit/SegmentTimeout"


#
# MedSAMKit
#
class MedSAMKit(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSAM Kit"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["medsam-kit developers"]
        self.parent.helpText = (
            "Segment volumes with a SAM-family model served by <code>medsam-kit serve</code> (on this computer "
            "or a GPU box). Connect, pick the volume, place include/exclude points or an ROI box on a slice "
            "and press Segment, or Auto-segment all. See docs/slicer.md of medsam-kit for the step-by-step guide.")
        self.parent.acknowledgementText = (
            "Thin client of medsam-kit's inference server; the model (SAM-2.1 / SAM / MedSAM weights) runs in the "
            "server, so Slicer's Python needs no PyTorch.")


class VolumeInput:
    """What is uploaded for one Slicer volume: voxels ``(Z, Y, X)`` or ``(Z, Y, X, C)``, world IJKToRAS,
    and a key (content hash of both) under which the server's volume id is remembered."""

    def __init__(self, array: np.ndarray, ijkToRas: np.ndarray, name: str) -> None:
        self.array, self.ijkToRas, self.name = array, np.asarray(ijkToRas, dtype=float), name
        digest = hashlib.blake2b(np.ascontiguousarray(array).view(np.uint8), digest_size=16)
        digest.update(repr((array.shape, str(array.dtype), self.ijkToRas.round(9).tolist())).encode())
        self.key = digest.hexdigest()

    @property
    def shapeZyx(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.array.shape[:3])

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    def fileName(self) -> str:
        """Upload file name: only its ``.nrrd`` suffix matters to the server; the rest shows in its messages."""
        return (re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name).strip("._") or "volume")[:60] + ".nrrd"

    def fileBytes(self) -> bytes:
        return write_nrrd(self.array, self.ijkToRas)


class SegmentationOutcome:
    """A decoded server answer: ``labels`` ``(Z, Y, X)`` on the input grid, the label table, request stats,
    and ``onlyValues``: the label values this request updates (None: all, for Auto-segment)."""

    def __init__(self, labels, ijkToRas, labelInfos, stats, onlyValues, seconds):
        self.labels, self.ijkToRas, self.labelInfos = labels, ijkToRas, tuple(labelInfos)
        self.stats, self.onlyValues, self.seconds = dict(stats), onlyValues, seconds

    def summary(self) -> str:
        encoded = self.stats.get("encoded_slices")
        work = "" if encoded is None else (", embeddings reused" if encoded == 0 else f", {encoded} slices encoded")
        return f"done in {self.seconds:.1f} s{work}"


#
# MedSAMKitLogic
#
class MedSAMKitLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the GUI (Python console, scripts, the Test class).

    Thread rule: methods taking MRML nodes run on Slicer's GUI thread; :meth:`ensureUploaded` and
    :meth:`requestSegmentation` touch no Qt/MRML object and may run in a worker thread.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.client = None
        self.info = None
        self._volumeIds = {}  # VolumeInput.key -> server volume id

    # ------------------------------------------------------------------------------------- server
    def connect(self, url=DEFAULT_URL, token=None, timeout=30.0, segmentTimeout=600.0, progress=None):
        """Check the server and read its model info; returns :class:`MedSAMKitLib.ServerInfo`."""
        client = MedSAMKitClient(url, token, timeout=timeout, segment_timeout=segmentTimeout)
        if progress is not None:
            progress(None, f"Connecting to {client.url}...")
        client.health()
        info = client.info()
        if client.url != getattr(self.client, "url", None):
            self._volumeIds.clear()  # ids belong to the server that issued them
        self.client, self.info = client, info
        return info

    def _requireConnection(self):
        if self.client is None or self.info is None:
            raise MedSAMKitError("not connected: enter the server URL and press Connect", kind="usage")

    # ---------------------------------------------------------------------- Slicer -> numpy (GUI)
    def volumeIjkToRas(self, volumeNode):
        """World IJKToRAS ``(4, 4)`` of a volume: its own matrix, times a linear parent transform."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        ijkToRas = slicer.util.arrayFromVTKMatrix(matrix)
        transformNode = volumeNode.GetParentTransformNode()
        if transformNode is not None:
            if not transformNode.IsTransformToWorldLinear():
                raise ValueError(f"volume {volumeNode.GetName()!r} is under a non-linear transform; harden it first "
                                 f"(Data module: right-click the volume > Harden transform)")
            toWorld = vtk.vtkMatrix4x4()
            transformNode.GetMatrixTransformToWorld(toWorld)
            ijkToRas = slicer.util.arrayFromVTKMatrix(toWorld) @ ijkToRas
        return ijkToRas

    def volumeInput(self, volumeNode, channelNodes=()):
        """:class:`VolumeInput` of a scalar or vector volume; with ``channelNodes`` (further scalar volumes on
        the same grid, in the model's channel order after the first) a multi-channel ``(Z, Y, X, C)`` stack."""
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("select an input volume that holds voxels")
        array = np.array(slicer.util.arrayFromVolume(volumeNode))  # a copy: the worker thread reads it later
        ijkToRas = self.volumeIjkToRas(volumeNode)
        if shear(ijkToRas) > 1e-4:  # the tolerance medsam-kit's Geometry accepts for float32 headers
            raise ValueError(f"{volumeNode.GetName()!r} lies on a sheared grid (axes not at right angles, e.g. a CT "
                             f"gantry tilt or a scaling/shearing parent transform); resample it onto a regular grid "
                             f"first (Resample Scalar/Vector/DWI Volume, or the DICOM module's regularization)")
        channelNodes = [node for node in channelNodes if node is not None]
        if channelNodes:
            if array.ndim != 3:
                raise ValueError(f"{volumeNode.GetName()!r} already has {array.shape[3]} components; extra channel "
                                 f"volumes are for scalar volumes")
            nodes = [volumeNode, *channelNodes]
            array = stack_channels([array] + [np.asarray(slicer.util.arrayFromVolume(n)) for n in channelNodes],
                                   [ijkToRas] + [self.volumeIjkToRas(n) for n in channelNodes],
                                   [n.GetName() for n in nodes])
        if array.ndim == 4 and array.shape[3] == 1:
            array = array[..., 0]
        if array.ndim not in (3, 4) or min(array.shape) < 1:
            raise ValueError(f"{volumeNode.GetName()!r} has voxel array shape {array.shape}; expected a 3D volume")
        return VolumeInput(array, ijkToRas, volumeNode.GetName())

    @staticmethod
    def markupsPositions(markupsNode):
        """``(N, 3)`` world RAS positions of the placed control points (a point being placed is skipped)."""
        if markupsNode is None or markupsNode.GetNumberOfControlPoints() == 0:
            return np.zeros((0, 3))
        positions = slicer.util.arrayFromMarkupsControlPoints(markupsNode, world=True)
        if hasattr(markupsNode, "GetNthControlPointPositionStatus"):
            defined = [markupsNode.GetNthControlPointPositionStatus(n) == markupsNode.PositionDefined
                       for n in range(len(positions))]
            positions = positions[np.asarray(defined, dtype=bool)]
        return np.asarray(positions, dtype=float).reshape(-1, 3)

    @staticmethod
    def roiBox(roiNode):
        """:class:`MedSAMKitLib.RoiBox` of a placed markups ROI (centre, half sizes, axes in world RAS), or None."""
        if roiNode is None:
            return None
        center, size = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        roiNode.GetCenterWorld(center)
        roiNode.GetSizeWorld(size)
        if not max(size) > 0:
            return None  # not placed yet
        axes = np.zeros((3, 3))
        for n in range(3):
            axis = [0.0, 0.0, 0.0]
            roiNode.GetAxisWorld(n, axis)
            axes[:, n] = np.asarray(axis) / (np.linalg.norm(axis) or 1.0)
        return RoiBox(tuple(center), tuple(0.5 * np.asarray(size)), tuple(map(tuple, axes)), roiNode.GetName())

    def promptDocument(self, volumeNode, labelName, includeNode=None, excludeNode=None, roiNode=None,
                       coordinates="voxel"):
        """The prompt document for ``labelName`` from the markups (see ``MedSAMKitLib.geometry``)."""
        if volumeNode is None:
            raise ValueError("select an input volume first")
        if self.info is not None and labelName not in [label.name for label in self.info.labels]:
            raise ValueError(f"the server's model has no structure {labelName!r}; it has "
                             f"{', '.join(label.name for label in self.info.labels)}")
        roi = self.roiBox(roiNode)
        shape = slicer.util.arrayFromVolume(volumeNode).shape[:3]
        try:
            return prompt_document(labelName, self.volumeIjkToRas(volumeNode), shape,
                                   include_ras=self.markupsPositions(includeNode),
                                   exclude_ras=self.markupsPositions(excludeNode), rois=[roi] if roi else [],
                                   coordinates=coordinates)
        except ValueError as err:
            raise ValueError(f"{volumeNode.GetName()}: {err}") from None

    # ----------------------------------------------------------------- server work (any thread)
    def ensureUploaded(self, volumeInput, progress=None):
        """Server id of ``volumeInput``, uploading it unless this content was uploaded before."""
        self._requireConnection()
        volumeId = self._volumeIds.get(volumeInput.key)
        if volumeId is not None:
            return volumeId
        self._checkChannels(volumeInput)  # before packing and sending what the server would refuse
        if progress is not None:
            progress(None, f"Packing {volumeInput.name} for upload...")
        data = volumeInput.fileBytes()
        limit = self.info.max_upload_bytes
        if limit and len(data) > limit:
            raise MedSAMKitError(f"{volumeInput.name!r} is {format_size(len(data))} as NRRD, over the server's "
                                 f"upload limit of {format_size(limit)}: crop it (Crop Volume) or start the server "
                                 f"with a larger --max-upload-mb", kind="usage")
        try:
            uploaded = self.client.upload(data, volumeInput.fileName(), progress)
        except MedSAMKitError as err:
            if err.status == 422 and "channel" in str(err.detail):
                raise MedSAMKitError(f"{err} — the model's channels are {', '.join(self.info.channels)}: select one "
                                     f"volume per channel (or a vector volume with that many components)",
                                     kind=err.kind, status=err.status, detail=err.detail) from None
            raise
        self._checkGrid(volumeInput, uploaded.shape_zyx, geometry_to_matrix(uploaded.geometry), "read the upload")
        self._volumeIds[volumeInput.key] = uploaded.id
        return uploaded.id

    def _checkChannels(self, volumeInput):
        """Refuse (one line) a volume whose channel count the server's model does not take (``/v1/info``)."""
        accepted = self.info.accepted_channels
        if accepted and volumeInput.channels not in accepted:
            wanted = " or ".join(str(count) for count in accepted)
            raise MedSAMKitError(f"{volumeInput.name!r} has {volumeInput.channels} channel(s) but the model takes "
                                 f"{wanted} — the model's channels are {', '.join(self.info.channels)}: select one "
                                 f"volume per channel (or a vector volume with that many components)", kind="usage")

    @staticmethod
    def _checkGrid(volumeInput, shapeZyx, ijkToRas, what):
        difference = grid_difference(volumeInput.ijkToRas, ijkToRas)
        if tuple(shapeZyx) != volumeInput.shapeZyx or difference:
            raise MedSAMKitError(f"the server {what} on another grid than {volumeInput.name} (shape {tuple(shapeZyx)} "
                                 f"vs {volumeInput.shapeZyx}{'; ' + difference if difference else ''}); please report "
                                 f"this with the volume's header", kind="protocol")

    def requestSegmentation(self, volumeInput, document=None, progress=None):
        """Segment on the server: prompted with a prompt ``document``, automatic (all labels) without one.

        Uploads first when needed, and once more if the server lost the volume (evicted / restarted).
        Returns a :class:`SegmentationOutcome` whose labels are checked to lie on the input's grid.
        """
        self._requireConnection()
        started = time.monotonic()
        result = None
        for attempt in (1, 2):
            volumeId = self.ensureUploaded(volumeInput, progress)
            try:
                result = (self.client.segment(volumeId, document, progress=progress) if document is not None
                          else self.client.auto(volumeId, progress=progress))
                break
            except MedSAMKitError as err:
                if err.status != 404 or attempt == 2:
                    raise
                self._volumeIds.pop(volumeInput.key, None)
        if progress is not None:
            progress(None, "Reading the label map...")
        image = result.read()
        labels = image.array
        if labels.ndim == 4:  # a .seg.nrrd with a layer axis: one layer is one label map
            if labels.shape[3] != 1:
                raise MedSAMKitError(f"the server returned {labels.shape[3]} overlapping segment layers; this "
                                     f"extension reads one label map", kind="protocol")
            labels = labels[..., 0]
        self._checkGrid(volumeInput, labels.shape, image.ijk_to_ras, "returned the label map")
        labelInfos = result.labels or self.info.labels
        onlyValues = None
        if document is not None:
            byName = {label.name: label.value for label in labelInfos}
            onlyValues = sorted(byName[name] for name in document.get("labels", {}) if name in byName)
        return SegmentationOutcome(labels, image.ijk_to_ras, labelInfos, result.stats, onlyValues,
                                   time.monotonic() - started)

    def forgetVolume(self, volumeInput):
        """Delete the volume (and its embeddings) on the server; no-op when it was never uploaded."""
        volumeId = self._volumeIds.pop(volumeInput.key, None)
        if volumeId is not None and self.client is not None:
            try:
                self.client.delete(volumeId)
            except MedSAMKitError as err:
                if err.status != 404:
                    raise

    # ---------------------------------------------------------------- results -> Slicer (GUI)
    def applySegmentation(self, outcome, volumeNode, segmentationNode=None):
        """Import ``outcome`` into ``segmentationNode`` (created when None): one segment per label, named and
        coloured from the server's label table. A prompted outcome replaces only the prompted labels'
        segments; an automatic one replaces all. Returns the segmentation node."""
        specs = segments_from_labelmap(outcome.labels, outcome.labelInfos, outcome.onlyValues)
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{volumeNode.GetName()} MedSAM")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        transformNode = volumeNode.GetParentTransformNode()
        transformId = transformNode.GetID() if transformNode is not None else None
        segmentationNode.SetAndObserveTransformNodeID(transformId)  # the segments follow the volume
        segmentation = segmentationNode.GetSegmentation()
        segmentIds = {}
        for spec in specs:
            segmentId = segmentation.GetSegmentIdBySegmentName(spec.name)
            if segmentId:
                segmentation.GetSegment(segmentId).SetColor(*spec.color)
            else:
                segmentId = segmentation.AddEmptySegment("", spec.name, list(spec.color))
            segmentIds[spec.value] = segmentId
        if not segmentIds:
            return segmentationNode
        # The label map lies on the volume's grid (checked in requestSegmentation), so it is imported with the
        # volume's own IJKToRAS under the same parent transform: no resampling, voxel for voxel.
        localMatrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(localMatrix)
        labelmapNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "MedSAMKit import")
        try:
            labelmapNode.SetIJKToRASMatrix(localMatrix)
            labelmapNode.SetAndObserveTransformNodeID(transformId)
            slicer.util.updateVolumeFromArray(labelmapNode, keep_values(outcome.labels, segmentIds).astype(np.uint8))
            updated = vtk.vtkStringArray()
            for segmentId in segment_id_table(segmentIds):
                updated.InsertNextValue(segmentId)
            if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(
                    labelmapNode, segmentationNode, updated):
                raise RuntimeError(f"Slicer could not import the label map into {segmentationNode.GetName()!r}")
        finally:
            slicer.mrmlScene.RemoveNode(labelmapNode)
        return segmentationNode

    # ------------------------------------------------------------------- one-call conveniences
    def segment(self, volumeNode, labelName, includeNode=None, excludeNode=None, roiNode=None,
                segmentationNode=None, channelNodes=()):
        """Prompted segmentation of ``labelName``, synchronously (scripts, tests). Returns the segmentation node."""
        document = self.promptDocument(volumeNode, labelName, includeNode, excludeNode, roiNode)
        outcome = self.requestSegmentation(self.volumeInput(volumeNode, channelNodes), document)
        return self.applySegmentation(outcome, volumeNode, segmentationNode)

    def autoSegment(self, volumeNode, segmentationNode=None, channelNodes=()):
        """Automatic segmentation of every label, synchronously. Returns the segmentation node."""
        outcome = self.requestSegmentation(self.volumeInput(volumeNode, channelNodes))
        return self.applySegmentation(outcome, volumeNode, segmentationNode)


#
# MedSAMKitWidget
#
class MedSAMKitWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel (Resources/UI/MedSAMKit.ui)."""

    POLL_MS = 50  # GUI refresh while a request runs
    ROLES = {  # markups node per role: class, name, colour, several points?
        "include": ("vtkMRMLMarkupsFiducialNode", "MedSAM include", (0.2, 0.85, 0.2), True),
        "exclude": ("vtkMRMLMarkupsFiducialNode", "MedSAM exclude", (0.9, 0.2, 0.2), True),
        "box": ("vtkMRMLMarkupsROINode", "MedSAM box", (1.0, 0.85, 0.1), False),
    }

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._call = None
        self._onDone = self._onError = None
        self._startedAt = 0.0
        self._timer = None
        self._channelSelectors = []

    # ---------------------------------------------------------------------------------- set-up
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSAMKit.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSAMKitLogic()

        settings = qt.QSettings()
        self.ui.serverUrlLineEdit.text = settings.value(_SETTINGS_URL, DEFAULT_URL) or DEFAULT_URL
        self.ui.timeoutSpinBox.value = int(settings.value(_SETTINGS_TIMEOUT, 600) or 600)
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.autoSegmentButton.connect("clicked(bool)", self.onAutoSegment)
        self.ui.clearPromptsButton.connect("clicked(bool)", self.onClearPrompts)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.labelComboBox.connect("currentIndexChanged(int)", self.updateButtons)
        for widget in (self.ui.includePointsPlaceWidget, self.ui.excludePointsPlaceWidget, self.ui.roiPlaceWidget):
            widget.setMRMLScene(slicer.mrmlScene)
            widget.buttonsVisible = False
            widget.placeButton().show()
            widget.deleteButton().show()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._bindMarkups()
        self._setStatus("Not connected. Start `medsam-kit serve`, then press Connect.")
        self.updateButtons()

    def cleanup(self):
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def onSceneEndClose(self, caller, event):
        self._bindMarkups()

    def _markupsNode(self, role):
        """The scene's markups node for ``role`` (include / exclude / box), created when missing."""
        className, name, color, _ = self.ROLES[role]
        for node in slicer.util.getNodesByClass(className):
            if node.GetAttribute(ROLE_ATTRIBUTE) == role:
                return node
        node = slicer.mrmlScene.AddNewNodeByClass(className, name)
        node.SetAttribute(ROLE_ATTRIBUTE, role)
        node.CreateDefaultDisplayNodes()
        node.GetDisplayNode().SetSelectedColor(*color)
        node.GetDisplayNode().SetColor(*color)
        return node

    def _bindMarkups(self):
        places = {"include": self.ui.includePointsPlaceWidget, "exclude": self.ui.excludePointsPlaceWidget,
                  "box": self.ui.roiPlaceWidget}
        for role, widget in places.items():
            widget.setCurrentNode(self._markupsNode(role))
            place = slicer.qSlicerMarkupsPlaceWidget
            widget.placeMultipleMarkups = (place.ForcePlaceMultipleMarkups if self.ROLES[role][3]
                                           else place.ForcePlaceSingleMarkup)

    def _rebuildChannelSelectors(self, info):
        """One volume selector per further model channel, for models that need several (e.g. 4 MRI sequences);
        none for a model that also takes one grey volume (SAM's RGB input, repeated from the grey channel)."""
        layout = self.ui.extraChannelsWidget.layout()
        for selector in self._channelSelectors:
            layout.removeRow(selector)
        self._channelSelectors = []
        multiChannel = len(info.channels) > 1 and 1 not in info.accepted_channels
        self.ui.inputVolumeLabel.text = f"Input volume ({info.channels[0]}):" if multiChannel else "Input volume:"
        for name in info.channels[1:] if multiChannel else []:
            selector = slicer.qMRMLNodeComboBox()
            selector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
            selector.noneEnabled = True
            selector.addEnabled = selector.removeEnabled = False
            selector.setMRMLScene(slicer.mrmlScene)
            selector.setToolTip(f"Volume of channel {name!r}, on the grid of the input volume. Leave empty when the "
                                f"input volume already has all channels as components.")
            layout.addRow(f"Channel {name}:", selector)
            self._channelSelectors.append(selector)

    # ------------------------------------------------------------------------------------ state
    def updateButtons(self, *unused):
        busy = self._call is not None
        connected = self.logic is not None and self.logic.info is not None
        hasVolume = self.ui.inputVolumeSelector.currentNode() is not None
        self.ui.connectButton.enabled = not busy
        self.ui.segmentButton.enabled = not busy and connected and hasVolume and self.ui.labelComboBox.count > 0
        self.ui.autoSegmentButton.enabled = not busy and connected and hasVolume
        tip = "" if connected else "Connect to a server first. "
        tip += "" if hasVolume else "Select an input volume."
        self.ui.segmentButton.toolTip = tip or "Segment the selected structure from the placed prompts."
        self.ui.autoSegmentButton.toolTip = tip or "Segment every structure the model knows, without prompts."

    def _setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c62828;" if error else "")

    def _showError(self, message):
        self._setStatus(message, error=True)
        slicer.util.errorDisplay(message, windowTitle="MedSAM Kit")

    # ---------------------------------------------------------------------------- background
    def _runInBackground(self, fn, args, onDone, busyText, onError=None):
        """``fn(*args, progress=...)`` in a worker thread; ``onDone(result)`` / ``onError(message)`` on the GUI
        thread afterwards."""
        self._call = BackgroundCall(fn, *args).start()
        self._onDone, self._onError, self._startedAt = onDone, onError, time.monotonic()
        self.ui.progressBar.setRange(0, 0)
        self.ui.progressBar.show()
        self._setStatus(busyText)
        self.updateButtons()
        self._timer.start()

    def _poll(self):
        call = self._call
        if call is None:
            self._timer.stop()
            return
        finished = call.wait(0.02)  # join() releases the GIL: the worker runs while the GUI waits here
        fraction, message = call.progress
        elapsed = time.monotonic() - self._startedAt
        if not finished:
            if fraction is None:
                self.ui.progressBar.setRange(0, 0)
            else:
                self.ui.progressBar.setRange(0, 100)
                self.ui.progressBar.setValue(int(round(100 * fraction)))
            if message:
                self._setStatus(f"{message} ({elapsed:.0f} s)")
            return
        self._timer.stop()
        self._call, onDone, onError = None, self._onDone, self._onError
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.setValue(100)
        message = None
        try:
            onDone(call.result())
        except MedSAMKitError as err:
            message = str(err)
            if err.server_down:  # say so where the connection is shown, not only in the dialog
                self.ui.connectionStatusLabel.text = "Server not reachable: start it, then press Connect"
        except (ValueError, RuntimeError) as err:
            message = str(err)
        except Exception as err:  # noqa: BLE001 - a bug must not leave the panel stuck; show and log it
            logging.exception("MedSAMKit request failed")
            message = f"unexpected error: {type(err).__name__}: {err} (details in the Python console)"
        if message is not None:
            self.ui.progressBar.setValue(0)
            if onError is not None:
                onError(message)
            self._showError(message)
        self.updateButtons()

    # ------------------------------------------------------------------------------- actions
    def onConnect(self):
        url, token, timeout = self.ui.serverUrlLineEdit.text, self.ui.tokenLineEdit.text, self.ui.timeoutSpinBox.value
        self.ui.connectionStatusLabel.text = "Connecting..."

        def done(info):
            qt.QSettings().setValue(_SETTINGS_URL, self.logic.client.url)
            qt.QSettings().setValue(_SETTINGS_TIMEOUT, timeout)
            self.ui.connectionStatusLabel.text = f"Connected to {self.logic.client.url}"
            self.ui.modelInfoLabel.text = info.summary()
            current = self.ui.labelComboBox.currentText
            self.ui.labelComboBox.clear()
            for label in info.labels:
                self.ui.labelComboBox.addItem(label.name)
            self.ui.labelComboBox.setCurrentIndex(max(self.ui.labelComboBox.findText(current), 0))
            self._rebuildChannelSelectors(info)
            self._setStatus("Connected. Place prompts on a slice, then Segment, or Auto-segment all.")

        def failed(message):
            self.logic.info = None
            self.ui.connectionStatusLabel.text = "Not connected"
            self.ui.modelInfoLabel.text = ""

        self._runInBackground(self.logic.connect, (url, token, 30.0, float(timeout)), done, "Connecting...",
                              onError=failed)

    def _channelNodes(self):
        return [selector.currentNode() for selector in self._channelSelectors]

    def onSegment(self):
        volumeNode = self.ui.inputVolumeSelector.currentNode()
        labelName = self.ui.labelComboBox.currentText
        try:
            document = self.logic.promptDocument(volumeNode, labelName, self._markupsNode("include"),
                                                 self._markupsNode("exclude"), self._markupsNode("box"))
            volumeInput = self.logic.volumeInput(volumeNode, self._channelNodes())
        except ValueError as err:
            self._showError(str(err))
            return
        self._runInBackground(self.logic.requestSegmentation, (volumeInput, document),
                              lambda outcome: self._applyOutcome(outcome, volumeNode),
                              f"Segmenting {labelName} in {volumeNode.GetName()}...")

    def onAutoSegment(self):
        volumeNode = self.ui.inputVolumeSelector.currentNode()
        try:
            volumeInput = self.logic.volumeInput(volumeNode, self._channelNodes())
        except ValueError as err:
            self._showError(str(err))
            return
        self._runInBackground(self.logic.requestSegmentation, (volumeInput, None),
                              lambda outcome: self._applyOutcome(outcome, volumeNode),
                              f"Auto-segmenting {volumeNode.GetName()}...")

    def _applyOutcome(self, outcome, volumeNode):
        segmentationNode = self.logic.applySegmentation(outcome, volumeNode,
                                                        self.ui.outputSegmentationSelector.currentNode())
        self.ui.outputSegmentationSelector.setCurrentNode(segmentationNode)
        names = [label.name for label in outcome.labelInfos
                 if outcome.onlyValues is None or label.value in outcome.onlyValues]
        self._setStatus(f"{', '.join(names)}: {outcome.summary()}.")

    def onClearPrompts(self):
        for role in ("include", "exclude"):
            self._markupsNode(role).RemoveAllControlPoints()
        slicer.mrmlScene.RemoveNode(self._markupsNode("box"))  # a fresh ROI is placed with two clicks again
        self._bindMarkups()


#
# MedSAMKitTest
#
class MedSAMKitTest(ScriptedLoadableModuleTest):
    """Runs inside 3D Slicer (Reload and Test, or ``slicer.util.selectModule`` + the module's test).

    Offline checks always run: the Logic's IJK <-> RAS against Slicer's own matrices on an oblique
    volume, markups -> prompt voxels, NRRD written here and read back by Slicer. The server flows
    (upload, prompted segment, auto, delete) need a running ``medsam-kit serve``: its URL and token
    come from ``MEDSAMKIT_TEST_URL`` (default http://127.0.0.1:8000) and ``MEDSAMKIT_TEST_TOKEN``;
    without a server they are reported as skipped.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_GeometryMatchesSlicer()
        self.setUp()
        self.test_ServerFlows()

    @staticmethod
    def _obliqueMatrix():
        angle = np.deg2rad(20.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]])
        matrix = np.eye(4)
        matrix[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
        matrix[:3, 3] = [-30.0, 12.5, 40.0]
        return matrix

    def _blobVolume(self, channels=1):
        """An oblique ``(Z, Y, X) = (12, 48, 40)`` volume, bright ellipsoid around voxel (i, j, k) = (20, 24, 6)."""
        k, j, i = np.mgrid[0:12, 0:48, 0:40]
        blob = (((i - 20) / 8.0) ** 2 + ((j - 24) / 10.0) ** 2 + ((k - 6) / 3.0) ** 2) <= 1.0
        rng = np.random.default_rng(0)
        array = (blob * 800 + rng.normal(100, 20, blob.shape)).astype(np.int16)
        if channels > 1:
            array = np.stack([array] * channels, axis=-1)
        return slicer.util.addVolumeFromArray(array, self._obliqueMatrix(), name="MedSAMKitTestVolume",
                                              nodeClassName="vtkMRMLVectorVolumeNode" if channels > 1 else None)

    def test_GeometryMatchesSlicer(self):
        self.delayDisplay("IJK <-> RAS, markups -> prompts, NRRD round trip")
        logic = MedSAMKitLogic()
        volumeNode = self._blobVolume()
        matrix = logic.volumeIjkToRas(volumeNode)
        rasToIjk = vtk.vtkMatrix4x4()
        volumeNode.GetRASToIJKMatrix(rasToIjk)
        from MedSAMKitLib.geometry import ijk_to_ras, ras_to_ijk

        for ijk in ([0, 0, 0], [20, 24, 6], [39, 47, 11], [3.25, 7.5, 2.0]):
            ras = ijk_to_ras(ijk, matrix)
            slicerIjk = rasToIjk.MultiplyPoint([*ras, 1.0])[:3]
            np.testing.assert_allclose(slicerIjk, ijk, atol=1e-6)
            np.testing.assert_allclose(ras_to_ijk(ras, matrix), ijk, atol=1e-9)

        include = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
        include.AddControlPoint(vtk.vtkVector3d(*ijk_to_ras([20, 24, 6], matrix)))
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
        objectToNode = np.eye(4)  # ROI axes along the volume's i, j, k, centred on voxel (20, 24, 6)
        objectToNode[:3, :3] = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
        objectToNode[:3, 3] = ijk_to_ras([20, 24, 6], matrix)
        roi.SetAndObserveObjectToNodeMatrix(slicer.util.vtkMatrixFromArray(objectToNode))
        roi.SetSize(8 * 0.8, 10 * 0.9, 2.5)  # 8 x 10 voxels in-plane, one slice thick
        document = logic.promptDocument(volumeNode, "structure", include, None, roi)
        entry = document["labels"]["structure"]["6"]
        np.testing.assert_allclose(entry["points"], [[20.0, 24.0]], atol=1e-6)
        np.testing.assert_allclose(entry["boxes"], [[16.5, 19.5, 24.5, 29.5]], atol=1e-4)

        from MedSAMKitLib.nrrd import read_nrrd

        path = os.path.join(slicer.app.temporaryPath, "MedSAMKitTest.nrrd")
        volumeInput = logic.volumeInput(volumeNode)
        with open(path, "wb") as handle:
            handle.write(volumeInput.fileBytes())
        loaded = slicer.util.loadVolume(path)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded), volumeInput.array)
        self.assertEqual(grid_difference(logic.volumeIjkToRas(loaded), matrix), "")
        np.testing.assert_array_equal(read_nrrd(volumeInput.fileBytes()).array, volumeInput.array)
        os.remove(path)
        self.delayDisplay("Geometry test passed")

    def test_ServerFlows(self):
        url = os.environ.get("MEDSAMKIT_TEST_URL", DEFAULT_URL)
        logic = MedSAMKitLogic()
        try:
            info = logic.connect(url, os.environ.get("MEDSAMKIT_TEST_TOKEN"), timeout=10.0)
        except MedSAMKitError as err:
            if not err.server_down:
                raise
            self.delayDisplay(f"Server flows skipped: no medsam-kit server at {url} ({err})")
            return
        self.delayDisplay(f"Server flows against {url}: {info.summary()}")
        volumeNode = self._blobVolume(channels=info.accepted_channels[0])
        matrix = logic.volumeIjkToRas(volumeNode)
        from MedSAMKitLib.geometry import ijk_to_ras

        label = info.labels[0]
        include = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
        include.AddControlPoint(vtk.vtkVector3d(*ijk_to_ras([20, 24, 6], matrix)))
        volumeInput = logic.volumeInput(volumeNode)
        outcome = logic.requestSegmentation(volumeInput, logic.promptDocument(volumeNode, label.name, include))
        self.assertEqual(outcome.onlyValues, [label.value])
        segmentationNode = logic.applySegmentation(outcome, volumeNode)
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(label.name)
        self.assertTrue(segmentId)
        np.testing.assert_allclose(segmentation.GetSegment(segmentId).GetColor(), np.asarray(label.color) / 255.0,
                                   atol=1e-6)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        np.testing.assert_array_equal(mask > 0, outcome.labels == label.value)  # voxel for voxel on the volume

        automatic = logic.autoSegment(volumeNode)
        names = {automatic.GetSegmentation().GetNthSegment(n).GetName()
                 for n in range(automatic.GetSegmentation().GetNumberOfSegments())}
        self.assertEqual(names, {label.name for label in info.labels})

        volumeId = logic.ensureUploaded(volumeInput)  # cached: the same content is not uploaded twice
        logic.forgetVolume(volumeInput)
        self.assertNotIn(volumeId, [v["id"] for v in logic.client.volumes()])
        self.delayDisplay("Server flows passed")
