"""Write a :class:`~medsam_kit.infer.segmenter.SegmentationResult` next to its input.

Files for an output path ``OUT.nii.gz`` (any volume suffix :func:`medsam_kit.io.write_volume` knows):

* ``OUT.nii.gz`` — labels ``(Z, Y, X)`` uint8 on the input's grid, with its geometry;
* ``OUT.json`` — sidecar: ``{"labels": {"0": "background", ...}, "mode", "geometry", "source", ...}``;
* ``OUT_prob_<name>.nii.gz`` — optional per-class probability maps (float32, same grid);
* ``OUT_overlay.png`` — optional montage of a few slices with the labels drawn over the image.

:func:`result_files` names these files without writing anything (what ``predict`` checks before it
writes: never onto an input, an existing output only with ``--overwrite``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsam_kit.io import Volume, atomic_path, atomic_write_text, strip_volume_suffix, write_volume

SIDECAR_FORMAT = "medsam-kit-segmentation"


def _stem(path: Path) -> Path:
    return path.with_name(strip_volume_suffix(path.name))


def _suffix(path: Path) -> str:
    return path.name[len(strip_volume_suffix(path.name)):] or ".nii.gz"


def _label_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if strip_volume_suffix(path.name) != path.name else path.with_name(path.name + ".nii.gz")


def result_files(path: str | os.PathLike, label_names: Mapping[int, str], *, probabilities: Iterable[int] = (),
                 overlay: bool = False) -> dict[str, Path]:
    """The files :func:`write_result` writes for ``path``, by the same keys, without writing anything.

    Args:
        path: the label file (``.nii.gz`` is appended when it has no volume suffix).
        label_names: ``{value: name}`` (names the probability maps).
        probabilities: label values with a probability map (``SegmentationResult.probabilities`` keys).
        overlay: whether the PNG montage is written.
    """
    path = _label_path(path)
    stem, suffix = _stem(path), _suffix(path)
    files = {"labels": path}
    for value in sorted(probabilities):
        name = label_names.get(value, f"class_{value}")
        files[f"prob_{name}"] = stem.with_name(f"{stem.name}_prob_{name}{suffix}")
    if overlay:
        files["overlay"] = stem.with_name(f"{stem.name}_overlay.png")
    files["sidecar"] = stem.with_name(f"{stem.name}.json")
    return files


def overlay_slices(labels: np.ndarray, count: int = 6) -> list[int]:
    """Up to ``count`` slice indices to show: evenly spread over the slices holding labels (else all)."""
    labelled = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    pool = labelled if len(labelled) else np.arange(labels.shape[0])
    picks = np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int)
    return sorted({int(pool[p]) for p in picks})


def write_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, label_names: dict[int, str],
                  count: int = 6, reference: np.ndarray | None = None) -> Path:
    """PNG montage of ``count`` slices: ``image`` ``(Z, Y, X)`` (first channel) in grey, ``labels`` in colour.

    With ``reference`` (``(Z, Y, X)`` labels, e.g. the ground truth) a second row shows it on the same
    slices (chosen where either has labels), titled "prediction" / "reference".
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    rows = [("prediction", labels)] if reference is None else [("prediction", labels), ("reference", reference)]
    slices = overlay_slices(labels if reference is None else np.maximum(labels, reference), count)
    values = [v for v in sorted(label_names) if v != 0]
    colours = plt.get_cmap("tab10")
    cmap = ListedColormap([(0, 0, 0, 0)] + [colours(i % 10) for i in range(max(values, default=0))])
    fig, axes = plt.subplots(len(rows), len(slices), figsize=(3 * len(slices), 3.2 * len(rows)), squeeze=False)
    for row, (title, shown) in zip(axes, rows, strict=True):
        for ax, z in zip(row, slices, strict=True):
            ax.imshow(image[z], cmap="gray")
            ax.imshow(np.ma.masked_equal(shown[z], 0), cmap=cmap, vmin=0, vmax=max(max(values, default=1), 1),
                      alpha=0.5, interpolation="nearest")
            ax.set_title(f"slice {z}" if reference is None else f"{title}, slice {z}")
            ax.axis("off")
    handles = [Patch(color=cmap(v), label=label_names[v]) for v in values]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def write_result(path: str | os.PathLike, result: Any, *, image: np.ndarray | None = None,
                 probabilities: bool = False, overlay: bool = False, source: str | None = None) -> dict[str, Path]:
    """Write labels (+ sidecar, probability maps, overlay) of a ``SegmentationResult``.

    Args:
        path: the label file (suffix picks the format; ``.nii.gz`` when it has none).
        result: a :class:`~medsam_kit.infer.segmenter.SegmentationResult`.
        image: ``(Z, Y, X)`` or ``(C, Z, Y, X)`` input image, needed for ``overlay``.
        probabilities: write ``result.probabilities`` (must have been requested).
        overlay: write the PNG montage.
        source: input file name recorded in the sidecar.

    Returns:
        ``{"labels": ..., "sidecar": ..., "prob_<name>": ..., "overlay": ...}`` paths written.
    """
    if probabilities and result.probabilities is None:
        raise ValueError("probability maps were not computed; segment with return_probabilities=True")
    if overlay and image is None:
        raise ValueError("an overlay needs the input image")
    files = result_files(path, result.label_names, probabilities=result.probabilities if probabilities else (),
                         overlay=overlay)
    path = files["labels"]
    written = {"labels": write_volume(path, Volume(result.labels.astype(np.uint8), result.geometry,
                                                   {"format": "labels"}))}
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "labels": {str(k): v for k, v in sorted(result.label_names.items())},
        "present": sorted(int(v) for v in np.unique(result.labels)),
        "mode": result.mode,
        "shape_zyx": list(result.labels.shape),
        "geometry": result.geometry.to_dict(),
        "source": source,
        "files": {"labels": path.name},
    }
    if probabilities:
        for value, prob in sorted(result.probabilities.items()):
            key = f"prob_{result.label_names.get(value, f'class_{value}')}"
            written[key] = write_volume(files[key], Volume(prob.astype(np.float32), result.geometry))
            sidecar["files"][key] = files[key].name
    if overlay:
        grey = image if image.ndim == 3 else image[0]
        written["overlay"] = write_overlay(files["overlay"], grey, result.labels, result.label_names)
        sidecar["files"]["overlay"] = files["overlay"].name
    # last: a label file without its sidecar is the trace of an interrupted write
    atomic_write_text(files["sidecar"], json.dumps(sidecar, indent=2) + "\n")
    written["sidecar"] = files["sidecar"]
    return written
