"""Attached NRRD files in memory: write a Slicer volume for upload, read the label map that comes back.

Only the standard library and numpy (both ship with 3D Slicer), so the extension needs no
``pip install``. The subset handled is what medsam-kit and Slicer exchange: one attached file
(header + data), ``raw`` or ``gzip`` encoding, 3 spatial axes, optionally one non-spatial axis of
components first (multi-channel volumes; the ``list`` axis of a one-layer ``.seg.nrrd``).

Axis conventions:

* arrays are Slicer's ``slicer.util.arrayFromVolume`` order: ``(K, J, I)`` = ``(Z, Y, X)`` for a
  scalar volume and ``(K, J, I, C)`` for C components. NRRD stores the fastest axis first, so the
  file's ``sizes`` are ``I J K`` (``C I J K`` with components) and the bytes are the array's C order.
* geometry is the volume's ``IJKToRAS`` 4x4 matrix (column ``n`` = RAS step of index axis ``n`` in mm,
  last column = RAS position of voxel ``(0, 0, 0)``). Files are written in LPS
  (``space: left-posterior-superior``, what ITK, SimpleITK and Slicer itself write); LPS and RAS
  files are both read.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field

import numpy as np

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_SPACES = {"left-posterior-superior": _RAS_TO_LPS, "LPS": _RAS_TO_LPS,
           "right-anterior-superior": np.eye(3), "RAS": np.eye(3)}
_TYPES = {  # numpy dtype -> NRRD type name
    "uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16", "uint32": "uint32",
    "int32": "int32", "uint64": "uint64", "int64": "int64", "float32": "float", "float64": "double",
}
_TYPE_ALIASES = {
    "uchar": "uint8", "unsigned char": "uint8", "uint8_t": "uint8", "signed char": "int8", "int8_t": "int8",
    "short": "int16", "short int": "int16", "signed short": "int16", "signed short int": "int16", "int16_t": "int16",
    "ushort": "uint16", "unsigned short": "uint16", "unsigned short int": "uint16", "uint16_t": "uint16",
    "int": "int32", "signed int": "int32", "int32_t": "int32", "uint": "uint32", "unsigned int": "uint32",
    "uint32_t": "uint32", "longlong": "int64", "long long": "int64", "long long int": "int64",
    "signed long long": "int64", "signed long long int": "int64", "int64_t": "int64",
    "ulonglong": "uint64", "unsigned long long": "uint64", "unsigned long long int": "uint64", "uint64_t": "uint64",
    "float": "float32", "double": "float64",
}
for _numpy_name in _TYPES:
    _TYPE_ALIASES.setdefault(_numpy_name, _numpy_name)


class NrrdError(ValueError):
    """A NRRD file this module cannot read (one line saying what and why)."""


@dataclass
class NrrdImage:
    """A decoded NRRD file.

    Attributes:
        array: ``(Z, Y, X)`` or ``(Z, Y, X, C)`` (components last, as ``arrayFromVolume`` gives them).
        ijk_to_ras: ``(4, 4)`` float64 IJKToRAS matrix.
        fields: the header fields (``"type"``, ``"sizes"``, ...) as strings.
        key_values: the ``key:=value`` lines (e.g. a ``.seg.nrrd``'s ``Segment0_Name``).
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray
    fields: dict[str, str] = field(default_factory=dict)
    key_values: dict[str, str] = field(default_factory=dict)


def _vector(values) -> str:
    return "(" + ",".join(format(float(v), ".17g") for v in values) + ")"


def write_nrrd(array: np.ndarray, ijk_to_ras: np.ndarray, *, compress: bool = True,
               key_values: dict[str, str] | None = None) -> bytes:
    """NRRD file bytes of a volume.

    Args:
        array: ``(Z, Y, X)`` scalar or ``(Z, Y, X, C)`` multi-component voxels; bool is stored as uint8.
        ijk_to_ras: ``(4, 4)`` IJKToRAS matrix of the grid.
        compress: gzip the voxels (level 1: fast, and still shrinks CT/MRI a lot on a slow link).
        key_values: extra ``key:=value`` header lines.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.name not in _TYPES:
        raise NrrdError(f"cannot write voxels of type {array.dtype}; expected one of {', '.join(_TYPES)}")
    if array.ndim not in (3, 4):
        raise NrrdError(f"expected a (Z, Y, X) or (Z, Y, X, C) array, got shape {array.shape}")
    matrix = np.asarray(ijk_to_ras, dtype=float)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise NrrdError(f"ijk_to_ras must be a finite 4x4 matrix, got {matrix.tolist()}")
    lps = _RAS_TO_LPS @ matrix[:3, :]
    directions = " ".join(_vector(lps[:, axis]) for axis in range(3))
    spatial_sizes = " ".join(str(n) for n in array.shape[:3][::-1])
    if array.ndim == 4:
        sizes, kinds, directions = f"{array.shape[3]} {spatial_sizes}", "vector domain domain domain", \
            f"none {directions}"
    else:
        sizes, kinds = spatial_sizes, "domain domain domain"
    lines = [
        "NRRD0004",
        "# written by MedSAMKitLib (3D Slicer extension of medsam-kit)",
        f"type: {_TYPES[array.dtype.name]}",
        f"dimension: {array.ndim}",
        "space: left-posterior-superior",
        f"sizes: {sizes}",
        f"space directions: {directions}",
        f"kinds: {kinds}",
        "endian: little",
        f"encoding: {'gzip' if compress else 'raw'}",
        f"space origin: {_vector(lps[:, 3])}",
    ]
    lines += [f"{key}:={value}" for key, value in (key_values or {}).items()]
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    if compress:
        data = gzip.compress(data, compresslevel=1)
    return ("\n".join(lines) + "\n\n").encode("ascii") + data


def _parse_vector(text: str, where: str) -> list[float] | None:
    text = text.strip()
    if text == "none":
        return None
    if not (text.startswith("(") and text.endswith(")")):
        raise NrrdError(f"{where}: expected a vector like (1,0,0), found {text!r}")
    try:
        return [float(v) for v in text[1:-1].split(",")]
    except ValueError:
        raise NrrdError(f"{where}: expected numbers in {text!r}") from None


def _split_vectors(text: str) -> list[str]:
    """``"none (1,0,0) (0, 1, 0)"`` -> ``["none", "(1,0,0)", "(0, 1, 0)"]`` (vectors may contain spaces)."""
    parts, depth, current = [], 0, ""
    for char in text.strip():
        if char == " " and depth == 0:
            if current:
                parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    if current:
        parts.append(current)
    return parts


def _header(data: bytes) -> tuple[dict[str, str], dict[str, str], int]:
    end = data.find(b"\n\n")
    if not data.startswith(b"NRRD") or end < 0:
        raise NrrdError("not a NRRD file (no 'NRRD000x' magic line or no blank line after the header)")
    fields: dict[str, str] = {}
    key_values: dict[str, str] = {}
    for line in data[:end].decode("latin-1").splitlines()[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            key_values[key] = value
        elif ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
        else:
            raise NrrdError(f"malformed NRRD header line {line!r}")
    return fields, key_values, end + 2


def read_nrrd(data: bytes) -> NrrdImage:
    """Decode NRRD file bytes (see the module docstring for the subset read)."""
    fields, key_values, offset = _header(data)
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise NrrdError(f"NRRD header has no {key!r} field")
    if "data file" in fields or "datafile" in fields:
        raise NrrdError("detached NRRD (.nhdr with a 'data file') cannot be read from memory")
    if int(fields.get("byte skip", "0")) != 0 or int(fields.get("line skip", "0")) != 0:
        raise NrrdError("NRRD files with 'byte skip' / 'line skip' are not supported")
    type_name = _TYPE_ALIASES.get(fields["type"].lower())
    if type_name is None:
        raise NrrdError(f"unsupported NRRD voxel type {fields['type']!r}")
    dimension = int(fields["dimension"])
    sizes = [int(v) for v in fields["sizes"].split()]
    if len(sizes) != dimension or dimension not in (3, 4):
        raise NrrdError(f"expected a 3D volume (or 4D with components first), found sizes {sizes}")
    dtype = np.dtype(type_name).newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    encoding = fields["encoding"].lower()
    raw = data[offset:]
    if encoding in ("gzip", "gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise NrrdError(f"corrupt gzip data in NRRD file ({err})") from None
    elif encoding != "raw":
        raise NrrdError(f"unsupported NRRD encoding {encoding!r} (raw and gzip are read)")
    count = int(np.prod(sizes))
    if len(raw) < count * dtype.itemsize:
        raise NrrdError(f"NRRD data holds {len(raw)} bytes, sizes {sizes} of {type_name} need "
                        f"{count * dtype.itemsize}: truncated file")
    array = np.frombuffer(raw, dtype=dtype, count=count).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))

    directions = [_parse_vector(v, "space directions") for v in _split_vectors(fields.get("space directions", ""))]
    if not directions:  # no geometry: unit spacing at the origin, like ITK
        directions = ([None] if dimension == 4 else []) + [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    if len(directions) != dimension:
        raise NrrdError(f"'space directions' has {len(directions)} entries for {dimension} axes")
    if dimension == 4:
        if directions[0] is not None:
            raise NrrdError("4D NRRD: only a non-spatial first axis (components / layers) is supported")
        directions = directions[1:]  # the array is already (K, J, I, C): components are the fastest axis
    if any(d is None or len(d) != 3 for d in directions):
        raise NrrdError(f"'space directions' must be three 3-vectors for the spatial axes, found "
                        f"{fields.get('space directions')!r}")
    space = fields.get("space", "left-posterior-superior")
    if space not in _SPACES:
        raise NrrdError(f"unsupported NRRD space {space!r} (LPS and RAS are read)")
    to_ras = np.linalg.inv(_SPACES[space])  # both are their own inverse; kept general
    origin = _parse_vector(fields.get("space origin", "(0,0,0)"), "space origin") or [0.0, 0.0, 0.0]
    matrix = np.eye(4)
    matrix[:3, :3] = to_ras @ np.asarray(directions, dtype=float).T
    matrix[:3, 3] = to_ras @ np.asarray(origin, dtype=float)
    return NrrdImage(array, matrix, fields, key_values)
