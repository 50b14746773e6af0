"""The JSON prompt file users give to ``medsam-kit predict --prompts`` (and the server accepts).

Schema (version 1)::

    {
      "format": "medsam-kit-prompts",     optional; when present must be exactly this
      "version": 1,                        optional; when present must be 1
      "coordinates": "voxel" | "world",    optional, default "voxel"
      "space": "LPS" | "RAS",              world coordinates only, optional, default "LPS"
      "labels": {                          required
        "<label name>": {                  a structure name of the dataset, e.g. "LV" (not the background)
          "<slice k>": {                   slice index k (string of ASCII digits), 0 <= k < Z: the array's first axis
            "boxes":  [BOX, ...],          optional
            "points": [POINT, ...],        optional (at least one box or point per slice)
            "point_labels": [1, 0, ...]    optional, one per point: 1 positive, 0 negative; default all 1
          }
        }
      }
    }

With ``"coordinates": "voxel"`` (index coordinates of the ``(Z, Y, X)`` array, ``i = x`` column,
``j = y`` row, ``k = z`` slice):

* ``BOX`` = ``[x0, y0, x1, y1]``, **inclusive-exclusive**: the box covers columns ``x0 .. x1 - 1``
  and rows ``y0 .. y1 - 1`` (``x1 = last column + 1``); ``0 <= x0 < x1 <= X``, ``0 <= y0 < y1 <= Y``.
* ``POINT`` = ``[x, y]``: the voxel at column ``x``, row ``y`` of slice ``k``; fractional values are
  allowed within the slice (``-0.5 <= x <= X - 0.5``).

With ``"coordinates": "world"`` (millimetres in the volume's physical space; LPS like ITK/DICOM,
or RAS like NIfTI/3D Slicer with ``"space": "RAS"``):

* ``BOX`` = ``[[x, y, z], [x, y, z]]``: two opposite corners of the box **edges** (as a Slicer ROI
  is drawn), both on slice ``k``;
* ``POINT`` = ``[x, y, z]``: a position on slice ``k``.

A world position is "on slice k" when it lies within half a voxel of that slice's plane (the
index coordinate along Z is in ``[k - 0.5, k + 0.5]``). Oblique geometries are handled through the
volume's direction matrix.

Example (ACDC, voxel coordinates)::

    {"format": "medsam-kit-prompts", "version": 1, "coordinates": "voxel",
     "labels": {"LV":  {"4": {"boxes": [[100, 90, 131, 122]], "points": [[115, 105], [140, 105]],
                              "point_labels": [1, 0]}},
                "MYO": {"4": {"boxes": [[92, 82, 139, 130]]}}}}

Errors are ``ValueError`` with one line naming the file, the JSON location and what to fix (also for what
Python's JSON decoder takes but cannot use: a key given twice in one object, NaN / 1e400 / 400-digit
numbers, nesting deeper than its recursion limit, a file that is not UTF-8).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from medsam_kit.io.atomic import atomic_write_text
from medsam_kit.io.geometry import Geometry
from medsam_kit.prompts.types import BoxPrompt, PointPrompts, PromptSet, SlicePrompts

FORMAT = "medsam-kit-prompts"
VERSION = 1
_TOP_KEYS = ("format", "version", "coordinates", "space", "labels")
_ENTRY_KEYS = ("boxes", "points", "point_labels")
_SNAP = 1e-6  # voxels: world round-off on a boundary must not turn a valid prompt into an error
_LPS_RAS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS flips x and y


class _Context:
    """Shared parse state and the one-line error format ``source: location: problem``."""

    def __init__(self, source: str, shape_zyx: Sequence[int], geometry: Geometry | None, world: bool,
                 ras: bool) -> None:
        self.source, self.world, self.ras, self.geometry = source, world, ras, geometry
        self.nz, self.ny, self.nx = (int(s) for s in shape_zyx)

    def error(self, where: str, problem: str) -> ValueError:
        return ValueError(f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}")

    def to_index(self, where: str, value: Any, k: int) -> tuple[float, float]:
        """World ``[x, y, z]`` mm on slice ``k`` → continuous index ``(i, j)``."""
        xyz = _numbers(self, where, value, 3, "[x, y, z] in mm")
        lps = np.asarray(xyz) * (_LPS_RAS if self.ras else 1.0)
        i, j, kk = self.geometry.world_to_index(lps)  # type: ignore[union-attr]
        if abs(kk - k) > 0.5 + _SNAP:
            raise self.error(where, f"world position {_fmt(xyz)} mm is {abs(kk - k):.2f} voxels from slice {k} "
                                    f"(index z = {kk:.2f}, allowed within 0.5); put it under slice "
                                    f"{round(kk)} or fix its z")
        return float(i), float(j)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _show(value: Any, limit: int = 60) -> str:
    """``value`` as JSON for an error message: one line (unprintable characters escaped), at most ~``limit``
    characters (a 10,000-number list or a 5,000-digit key must not become a 100 kB message)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        text = repr(value)
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit] + "..."


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object (the decoder would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"key {_show(key)} appears twice in one object (JSON keeps only the last one); "
                                f"merge the two or remove one")
        obj[key] = value
    return obj


def _finite(value: Any) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond float range (JSON allows 400-digit integers)
        return False


def _numbers(ctx: _Context, where: str, value: Any, count: int, expected: str) -> list[float]:
    ok = isinstance(value, list | tuple) and len(value) == count and all(_finite(v) for v in value)
    if not ok:
        raise ctx.error(where, f"expected {expected} ({count} finite numbers), found {_show(value)}")
    return [float(v) for v in value]


def _snap(value: float, lo: float, hi: float) -> float:
    return lo if abs(value - lo) <= _SNAP else hi if abs(value - hi) <= _SNAP else value


def _parse_box(ctx: _Context, where: str, value: Any, k: int) -> BoxPrompt:
    if ctx.world:
        if not (isinstance(value, list | tuple) and len(value) == 2):
            raise ctx.error(where, f"expected a world box [[x, y, z], [x, y, z]] (two opposite corners in mm), "
                                   f"found {_show(value)}")
        (ia, ja), (ib, jb) = (ctx.to_index(f"{where}[{n}]", corner, k) for n, corner in enumerate(value))
        # Corners are edge positions; the edge grid is the index grid shifted by half a voxel.
        coords = [min(ia, ib) + 0.5, min(ja, jb) + 0.5, max(ia, ib) + 0.5, max(ja, jb) + 0.5]
    else:
        coords = _numbers(ctx, where, value, 4, "a box [x0, y0, x1, y1]")
    coords = [_snap(c, 0.0, float(n)) for c, n in zip(coords, (ctx.nx, ctx.ny, ctx.nx, ctx.ny), strict=True)]
    try:
        box = BoxPrompt(*coords)
        box.check_inside((ctx.ny, ctx.nx))
    except ValueError as err:
        raise ctx.error(where, f"in voxel coordinates, {err}" if ctx.world else str(err)) from None
    return box


def _parse_point(ctx: _Context, where: str, value: Any, k: int) -> tuple[float, float]:
    if ctx.world:
        x, y = ctx.to_index(where, value, k)
    else:
        x, y = _numbers(ctx, where, value, 2, "a point [x, y] (column, row; the slice is the key)")
    x, y = _snap(x, -0.5, ctx.nx - 0.5), _snap(y, -0.5, ctx.ny - 0.5)
    if not (-0.5 <= x <= ctx.nx - 0.5 and -0.5 <= y <= ctx.ny - 0.5):
        raise ctx.error(where, f"point (x={x:g}, y={y:g}) is outside the {ctx.ny}x{ctx.nx} (Y x X) slice: "
                               f"expected -0.5 <= x <= {ctx.nx - 0.5:g} and -0.5 <= y <= {ctx.ny - 0.5:g}")
    return x, y


def _parse_entry(ctx: _Context, where: str, entry: Any, k: int) -> SlicePrompts:
    if not isinstance(entry, Mapping):
        raise ctx.error(where, f"expected an object with boxes / points, found {_show(entry)}")
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ctx.error(where, f"unknown key(s) {unknown}; allowed: {list(_ENTRY_KEYS)}")
    lists = {}
    for key in _ENTRY_KEYS:
        items = entry.get(key, [])
        if not isinstance(items, list):
            raise ctx.error(f"{where}.{key}", f"expected a list, found {_show(items)}")
        lists[key] = items
    if not lists["boxes"] and not lists["points"]:
        raise ctx.error(where, "has neither boxes nor points; give at least one or remove the slice")
    boxes = tuple(_parse_box(ctx, f"{where}.boxes[{n}]", b, k) for n, b in enumerate(lists["boxes"]))
    coords = [_parse_point(ctx, f"{where}.points[{n}]", p, k) for n, p in enumerate(lists["points"])]
    labels = lists["point_labels"] if "point_labels" in entry else [1] * len(coords)
    if len(labels) != len(coords) or not all(type(v) is int and v in (0, 1) for v in labels):
        raise ctx.error(f"{where}.point_labels", f"expected one label per point ({len(coords)}), each 1 (positive) "
                                                 f"or 0 (negative), found {_show(labels)}")
    points = PointPrompts(np.asarray(coords, dtype=np.float64).reshape(-1, 2), np.asarray(labels, np.int64))
    return SlicePrompts(boxes=boxes, points=points)


def _label_value(ctx: _Context, name: str, label_names: Mapping[int, str]) -> int:
    by_name = {n: int(v) for v, n in label_names.items()}
    structures = [n for v, n in sorted(label_names.items()) if int(v) != 0]
    where = f"labels[{_show(name)}]"
    if name not in by_name:
        close = difflib.get_close_matches(name[:200], structures, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
        raise ctx.error(where, f"unknown label name {shown}{hint}; known: {', '.join(structures)}")
    if by_name[name] == 0:
        raise ctx.error(where, f"{name!r} is the background (value 0); prompt a structure: {', '.join(structures)}")
    return by_name[name]


_MAX_KEY_DIGITS = 9  # no volume has a billion slices; longer keys are refused before int() (4,300-digit limit)


def _slice_index(ctx: _Context, where: str, key: Any) -> int:
    """Slice key -> index: ASCII digits only (``str.isdigit`` also accepts "²", which ``int`` refuses,
    and ``int`` accepts "٣" or " 3"), inside ``0 .. Z - 1``."""
    text = str(key) if isinstance(key, str | int) and not isinstance(key, bool) else None
    valid = f"0..{ctx.nz - 1}"
    if text is not None and text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise ctx.error(where, f"slice key {_show(key)} is negative; slices are numbered {valid} (Z = {ctx.nz})")
    if text is None or not (text.isascii() and text.isdigit()):
        odd = next((c for c in text or "" if not c.isascii()), None)
        hint = f" in ASCII digits; it holds U+{ord(odd):04X} {unicodedata.name(odd, 'unnamed')}" if odd else ""
        raise ctx.error(where, f"slice key {_show(key)} is not a slice index (a whole number {valid}{hint})")
    if len(text.lstrip("0")) > _MAX_KEY_DIGITS:
        raise ctx.error(where, f"slice key {_show(text[:10] + '...')} ({len(text)} digits) is outside the volume "
                               f"(Z = {ctx.nz} slices, valid {valid})")
    k = int(text)
    if k >= ctx.nz:
        raise ctx.error(where, f"slice {k} is outside the volume (Z = {ctx.nz} slices, valid {valid})")
    return k


def parse_prompts(data: Any, shape_zyx: Sequence[int], geometry: Geometry | None, label_names: Mapping[int, str],
                  source: str = "prompts") -> PromptSet:
    """Validate a decoded prompt document (see the module docstring) and convert it to a :class:`PromptSet`.

    Args:
        data: the decoded JSON object.
        shape_zyx: ``(Z, Y, X)`` shape of the volume the prompts are for.
        geometry: the volume's geometry; needed for ``"coordinates": "world"`` only.
        label_names: ``{value: name}`` of the dataset (e.g. ``Case.label_names``).
        source: name used at the start of error messages (the file path).
    """
    if len(shape_zyx) != 3:
        raise ValueError(f"shape_zyx must be (Z, Y, X), got {tuple(shape_zyx)}")
    probe = _Context(source, shape_zyx, geometry, False, False)
    if not isinstance(data, Mapping):
        raise probe.error("", f"expected a JSON object with \"labels\", found {type(data).__name__}")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise probe.error("", f"unknown top-level key(s) {unknown}; allowed: {list(_TOP_KEYS)}")
    if "format" in data and data["format"] != FORMAT:
        raise probe.error("format", f"expected {FORMAT!r}, found {_show(data['format'])}")
    if "version" in data and data["version"] != VERSION:
        raise probe.error("version", f"this medsam-kit reads version {VERSION}, found {_show(data['version'])}")
    coordinates = data.get("coordinates", "voxel")
    if coordinates not in ("voxel", "world"):
        raise probe.error("coordinates", f"expected \"voxel\" or \"world\", found {_show(coordinates)}")
    space = data.get("space", "LPS")
    if "space" in data and coordinates != "world":
        raise probe.error("space", "only used with \"coordinates\": \"world\"; remove it or switch to world")
    if space not in ("LPS", "RAS"):
        raise probe.error("space", f"expected \"LPS\" or \"RAS\", found {_show(space)}")
    if coordinates == "world" and geometry is None:
        raise probe.error("coordinates", "world coordinates need the volume's geometry, none was given")
    ctx = _Context(source, shape_zyx, geometry, coordinates == "world", space == "RAS")
    labels = data.get("labels")
    if not isinstance(labels, Mapping):
        raise ctx.error("labels", f"expected an object {{label name: {{slice: prompts}}}}, found {_show(labels)}")
    result = PromptSet()
    for name, per_slice in labels.items():
        value = _label_value(ctx, name, label_names)
        if not isinstance(per_slice, Mapping):
            raise ctx.error(f"labels[{_show(name)}]",
                            f"expected an object {{slice: prompts}}, found {_show(per_slice)}")
        for key, entry in per_slice.items():
            where = f"labels[{_show(name)}][{_show(str(key))}]"
            k = _slice_index(ctx, where, key)
            if result.get(value, k) is not None:
                raise ctx.error(where, f"slice {k} of {name!r} is given twice")
            result.add(value, k, _parse_entry(ctx, where, entry, k))
    return result


def load_prompt_file(path: str | os.PathLike, shape_zyx: Sequence[int], geometry: Geometry | None,
                     label_names: Mapping[int, str]) -> PromptSet:
    """Read and validate a JSON prompt file for a ``(Z, Y, X)`` volume (see the module docstring)."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not an error
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); save the "
                         f"prompt file as UTF-8 JSON") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except _DuplicateKey as err:
        raise ValueError(f"{path}: {err}") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON: nested too deeply (a prompt file is 6 levels deep: labels, "
                         f"label, slice, boxes, box, corner)") from None
    except ValueError as err:  # Python refuses integers of more than sys.get_int_max_str_digits() digits
        digits = re.search(r"has (\d+) digits", str(err))
        size = f"{digits.group(1)} digits" if digits else f"more than {sys.get_int_max_str_digits()} digits"
        raise ValueError(f"{path}: not valid JSON: a number with {size}; coordinates are pixels or mm") from None
    return parse_prompts(data, shape_zyx, geometry, label_names, source=path)


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def prompts_to_dict(prompt_set: PromptSet, label_names: Mapping[int, str], *,
                    coordinates: Literal["voxel", "world"] = "voxel", geometry: Geometry | None = None,
                    space: Literal["LPS", "RAS"] = "LPS") -> dict:
    """The JSON document of ``prompt_set`` (inverse of :func:`parse_prompts`). Mask prompts cannot be stored."""
    if coordinates not in ("voxel", "world") or space not in ("LPS", "RAS"):
        raise ValueError(f"coordinates must be 'voxel' or 'world' and space 'LPS' or 'RAS', got {coordinates!r}, "
                         f"{space!r}")
    if coordinates == "world" and geometry is None:
        raise ValueError("writing world coordinates needs the volume's geometry")
    flip = _LPS_RAS if space == "RAS" else np.ones(3)

    def world(i: float, j: float, k: int) -> list[float]:
        return [float(v) for v in geometry.index_to_world([i, j, k]) * flip]  # type: ignore[union-attr]

    labels: dict[str, dict[str, dict]] = {}
    for label, k, prompts in prompt_set:
        if label not in label_names:
            raise ValueError(f"label value {label} has no name in label_names {dict(label_names)}")
        if prompts.mask is not None:
            raise ValueError(f"label {label_names[label]!r}, slice {k}: mask prompts cannot be written to a prompt "
                             f"file (boxes and points only)")
        entry: dict[str, list] = {}
        if prompts.boxes:
            if coordinates == "voxel":
                entry["boxes"] = [[_plain(v) for v in b.as_tuple()] for b in prompts.boxes]
            else:
                entry["boxes"] = [[world(b.x0 - 0.5, b.y0 - 0.5, k), world(b.x1 - 0.5, b.y1 - 0.5, k)]
                                  for b in prompts.boxes]
        if len(prompts.points):
            xy = prompts.point_coords
            entry["points"] = ([[_plain(x), _plain(y)] for x, y in xy] if coordinates == "voxel"
                               else [world(x, y, k) for x, y in xy])
            entry["point_labels"] = [int(v) for v in prompts.point_labels]
        labels.setdefault(label_names[label], {})[str(k)] = entry
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "coordinates": coordinates}
    if coordinates == "world":
        doc["space"] = space
    doc["labels"] = labels
    return doc


def dump_prompt_file(path: str | os.PathLike, prompt_set: PromptSet, label_names: Mapping[int, str], *,
                     coordinates: Literal["voxel", "world"] = "voxel", geometry: Geometry | None = None,
                     space: Literal["LPS", "RAS"] = "LPS") -> None:
    """Write ``prompt_set`` as a prompt file (atomically); :func:`load_prompt_file` reads it back."""
    doc = prompts_to_dict(prompt_set, label_names, coordinates=coordinates, geometry=geometry, space=space)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
