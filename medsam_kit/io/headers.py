"""Text headers of NRRD and MetaImage files, parsed from bytes the way ITK's readers parse them.

One parser serves every caller that must agree with the reader: the server's refusal of headers
that name another file, the shape / size checks made before any ITK call, the compressed-data
checks, and the writer's clean-up of detached data files.

Why by hand: the two readers split lines differently from each other and from Python's
``str.splitlines`` (which also breaks at ``\\x0b \\x0c \\x1c \\x1d \\x1e \\x85``; a header that hid
``data file: /etc/passwd`` behind such a byte passed a ``splitlines`` check and ITK then read
``/etc/passwd``). NRRD (teem's ``airOneLine``) ends a line at ``\\n``, ``\\r\\n`` or a lone ``\\r``;
the header ends at the first empty line. MetaIO reads a key up to ``=`` or ``:`` (skipping blank
space, line breaks included, before it) and a string value up to ``\\n``; the header ends at
``ElementDataFile``, and the voxels start after that line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

#: Bytes read from the start of a file when looking for its header.
HEADER_LIMIT = 1 << 20

_NRRD_LINE_END = re.compile(rb"\r\n|\r|\n")  # teem's airOneLine
# ASCII control bytes a header line has no reason to hold (tab and the line ends excepted); the server
# refuses headers that hold any. Not \x85 (NEL): it is a UTF-8 continuation byte ("Å" is \xc3\x85), and
# this parser, unlike str.splitlines, never splits there.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_METAIMAGE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # MetaIO's field names are identifiers
_METAIMAGE_LOCAL = ("LOCAL", "Local", "local")  # the spellings MetaIO takes for "voxels follow the header"


@dataclass
class TextHeader:
    """A parsed NRRD or MetaImage header.

    Attributes:
        kind: ``"nrrd"`` or ``"metaimage"``.
        fields: field values by key: NRRD keys normalised as teem matches them (lower case,
            blanks removed: ``"datafile"``, ``"sizes"``), MetaImage keys as written
            (``"ElementDataFile"``, ``"DimSize"``: MetaIO matches them case-sensitively); for a
            repeated key the last value.
        duplicates: keys given more than once (teem refuses them; MetaIO's choice is unclear).
        key_values: NRRD ``key:=value`` pairs (metadata, never read as a field).
        data_offset: byte offset where attached voxels start; None when the header did not end
            within the bytes given.
        control_lines: header lines (decoded latin-1) holding control bytes other than tab and
            the line ends.
        malformed: header lines neither blank, comment nor ``key: value`` / ``Key = Value``.
        lone_cr: a MetaImage header holds a ``\\r`` not followed by ``\\n`` (MetaIO's key and
            value readers then disagree about where the line ends).
    """

    kind: str
    fields: dict[str, str] = field(default_factory=dict)
    key_values: dict[str, str] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)
    data_offset: int | None = None
    control_lines: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    lone_cr: bool = False

    @property
    def complete(self) -> bool:
        """True when the header's end was found."""
        return self.data_offset is not None

    def data_files(self) -> list[str]:
        """Files the header says hold the voxels (empty when they follow the header)."""
        if self.kind == "nrrd":
            name = self.fields.get("datafile")
            return [] if name is None else [name]
        name = self.fields.get("ElementDataFile")
        return [] if name is None or name in _METAIMAGE_LOCAL else [name]


def _normalise_key(key: bytes) -> str:
    # teem accepts "data file" and "datafile" in any case; removing all blanks also catches
    # spellings it would refuse, which is the safe side for callers looking for data files.
    return re.sub(r"\s+", "", key.decode("latin-1")).lower()


def control_character(line: str) -> str | None:
    """The first control character of a header line (as :attr:`TextHeader.control_lines` holds them), or None."""
    match = _CONTROL.search(line.encode("latin-1"))
    return None if match is None else match.group().decode("latin-1")


def _set_field(header: TextHeader, key: str, value: str) -> None:
    if key in header.fields:
        header.duplicates.append(key)
    header.fields[key] = value


def _note_control(header: TextHeader, line: bytes) -> None:
    if _CONTROL.search(line):
        header.control_lines.append(line.decode("latin-1"))


def parse_nrrd_header(data: bytes, at_eof: bool = False) -> TextHeader:
    """Parse an NRRD header (magic line first) from the start of a file.

    Args:
        data: the file's first bytes (the whole header; :data:`HEADER_LIMIT` bytes are plenty).
        at_eof: ``data`` is the whole file, so a last line without a line end still counts (a
            detached ``.nhdr`` header may end at the end of the file).

    Returns:
        :class:`TextHeader`; ``data_offset`` is the first byte after the empty line.

    Raises:
        ValueError: ``data`` does not start with an ``NRRD000x`` magic line.
    """
    if not data.startswith(b"NRRD000"):
        raise ValueError("no 'NRRD000x' magic line")
    header = TextHeader("nrrd")
    position, first = 0, True
    while position < len(data):
        match = _NRRD_LINE_END.search(data, position)
        # a line cut off by the end of the bytes given (a final "\r" may be half of "\r\n")
        cut = match is None or (match.group() == b"\r" and match.end() == len(data))
        if cut and not at_eof:
            break
        if match is None:
            line, position = data[position:], len(data)
        else:
            line, position = data[position:match.start()], match.end()
        if first:
            first = False
            continue
        if not line:
            header.data_offset = position
            break
        _note_control(header, line)
        text = line.split(b"\0")[0]  # teem parses the line as a C string
        if text.startswith(b"#"):
            continue
        key, colon, rest = text.partition(b":")
        if not colon:
            header.malformed.append(line.decode("latin-1"))
        elif rest.startswith(b"="):  # "key:=value": teem takes ":=" before ": " as a key/value pair
            header.key_values.setdefault(key.decode("latin-1"), rest[1:].decode("latin-1"))
        else:
            _set_field(header, _normalise_key(key), rest.strip().decode("latin-1"))
    return header


def parse_metaimage_header(data: bytes, at_eof: bool = False) -> TextHeader:
    """Parse a MetaImage (``.mha`` / ``.mhd``) header from the start of a file.

    Args:
        data: the file's first bytes.
        at_eof: ``data`` is the whole file, so a last line without ``\n`` still counts.

    Returns:
        :class:`TextHeader`; ``data_offset`` is the first byte after the ``ElementDataFile`` line.
    """
    header = TextHeader("metaimage")
    position = 0
    while position < len(data):
        end = data.find(b"\n", position)
        if end < 0 and not at_eof:
            break
        end = len(data) if end < 0 else end
        raw, position = data[position:end], min(end + 1, len(data))
        line = raw[:-1] if raw.endswith(b"\r") else raw
        header.lone_cr = header.lone_cr or b"\r" in line
        _note_control(header, line)
        if not line.strip():
            continue
        match = re.search(rb"[=:]", line)
        if match is None:
            # MetaIO would carry on reading this key on the next line ("ElementDataFile\n= x")
            header.malformed.append(line.decode("latin-1"))
            continue
        # MetaIO skips blank space (C isspace) before a key and matches it case-sensitively
        key = line[:match.start()].strip().decode("latin-1")
        if not _METAIMAGE_KEY.fullmatch(key) or (key != "ElementDataFile"
                                                 and _normalise_key(key.encode("latin-1")) == "elementdatafile"):
            # MetaIO ignores such a key (or reads part of it as a value); where its reading and ours
            # part ways, a later line could name a data file
            header.malformed.append(line.decode("latin-1"))
            continue
        _set_field(header, key, line[match.end():].strip().decode("latin-1"))
        if key == "ElementDataFile":
            header.data_offset = position  # the first one ends the header: voxels follow its line
            break
    return header


def read_text_header(path: str | os.PathLike, limit: int = HEADER_LIMIT) -> TextHeader | None:
    """The NRRD / MetaImage header of ``path`` (None for other formats).

    The kind comes from the content: an ``NRRD000x`` magic line is NRRD; ``.mha`` / ``.mhd`` files
    are MetaImage.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        data = handle.read(limit)
        at_eof = not handle.read(1)
    if data.startswith(b"NRRD000"):
        return parse_nrrd_header(data, at_eof)
    if path.name.lower().endswith((".mha", ".mhd")):
        return parse_metaimage_header(data, at_eof)
    return None


def detached_data_names(path: str | os.PathLike) -> set[str]:
    """Base names of the data files a ``.nhdr`` / ``.mhd`` header names (empty when none)."""
    header = read_text_header(path)
    return set() if header is None else {Path(name).name for name in header.data_files()}


def is_multi_file(name: str) -> bool:
    """True for the multi-file forms of a data-file value: ``LIST [subdim]`` or ``format min max step [subdim]``
    (teem and MetaIO alike); any other value is one file name, spaces included."""
    parts = name.split()
    return bool(parts) and (parts[0].upper() == "LIST" or ("%" in parts[0] and len(parts) >= 4))


def data_file_paths(path: str | os.PathLike, header: TextHeader | None = None,
                    max_files: int = 100_000) -> list[Path]:
    """Every file a detached ``.nhdr`` / ``.mhd`` header (or an attached-looking one) names for its voxels.

    Handles the three forms both readers take: one file name (spaces allowed), ``LIST`` (the names
    follow the header, one per line) and a ``printf`` pattern ``name%03d.raw min max step``; relative
    names are relative to the header's folder. At most ``max_files`` names; [] when the voxels follow
    the header or the value cannot be expanded.
    """
    path = Path(path)
    header = header if header is not None else read_text_header(path)
    names = [] if header is None else header.data_files()
    if not names or not names[0].strip():
        return []
    value = names[0].strip()

    def resolve(name: str) -> Path:
        return Path(name) if Path(name).is_absolute() else path.parent / name

    if not is_multi_file(value):
        return [resolve(value)]
    parts = value.split()
    if parts[0].upper() == "LIST":
        if header.data_offset is None:
            return []
        with open(path, "rb") as handle:
            handle.seek(header.data_offset)
            lines = handle.read(HEADER_LIMIT).split(b"\n")
        return [resolve(line.decode("latin-1").strip()) for line in lines if line.strip()][:max_files]
    try:
        start, stop, step = (int(v) for v in parts[1:4])
        if step == 0:
            return []
        indices = range(start, stop + (1 if step > 0 else -1), step)
        return [resolve(parts[0] % index) for index in indices[:max_files]]
    except (ValueError, TypeError, OverflowError):  # not integers, or a format that is not one number
        return []
