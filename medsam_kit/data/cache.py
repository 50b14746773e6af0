"""Prepared-dataset cache: fingerprint + plan + each case preprocessed once, read lazily.

Layout written by :func:`prepare_cases` / :func:`prepare`::

    DIR/fingerprint.json        DatasetFingerprint (readable JSON)
    DIR/plan.json               PreprocessingPlan (readable JSON; its digest keys every case)
    DIR/cases.json              index: plan digest + one entry per case (id, subset, labeled, shape, spacing)
    DIR/split.json              train/val/test split (:mod:`medsam_kit.data.splits`; :func:`prepare` only)
    DIR/cases/<case_id>/image.npy   float32 (C, Z, Y, X), normalised (``/`` in ids written ``%2F``)
    DIR/cases/<case_id>/label.npy   uint8 (Z, Y, X), only for labeled cases
    DIR/cases/<case_id>/case.json   geometry, names, plan digest, source signature, meta (with
                                    meta["preprocessing"], read by ``invert_preprocessing``)

Why uncompressed ``.npy`` and not a compressed ``.npz``: ``.npy`` can be memory-mapped, so a
sampler that takes one slice or one 2.5D stack reads only those bytes instead of inflating the
whole volume every time (a BraTS case is ~140 MB as float32). float32 keeps z-scored values exact;
disk is the price. Each case folder is written atomically (temporary folder, then rename), so
a folder that exists is complete; its ``case.json`` records the plan digest and a signature of
the source files, and a re-run skips cases whose digest and signature match (no reading at all,
the fingerprint is reused too when the source signature is unchanged). A changed plan
re-prepares every case. Case folders of cases no longer in the source are left on disk but are
not in the index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from medsam_kit.data.adapters.base import CaseRecord
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import DatasetSpec
from medsam_kit.data.fingerprint import SAMPLES_PER_CASE, DatasetFingerprint, compute_fingerprint
from medsam_kit.data.preprocess import PreprocessingPlan, Preprocessor, make_plan
from medsam_kit.data.splits import DEFAULT_PROTOCOL, Split, make_split
from medsam_kit.io.atomic import atomic_dir, atomic_write_text
from medsam_kit.io.geometry import Geometry

INDEX_VERSION = 1
Progress = Callable[[int, int], None]


def _json_default(value):
    """JSON for the odd types adapters put in ``meta`` (paths, numpy scalars/arrays, tuples)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot store {type(value).__name__} in case.json")


def _dumps(data) -> str:
    return json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"  # strict JSON: no NaN


def _path_stats(path: Path) -> list:
    """(name, size, mtime_ns) of a file, or of every file in a folder (DICOM / slice folders)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = []
    for file in files:
        stat = file.stat()
        stats.append([str(file), stat.st_size, stat.st_mtime_ns])
    return stats


def source_signature(item: CaseRecord | Case) -> str:
    """Hash of what a case is made from: file names/sizes/mtimes for a record, array bytes for a Case."""
    digest = hashlib.sha256(item.case_id.encode())
    if isinstance(item, Case):
        for array in (item.image, item.label):
            if array is not None:
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(item.geometry.to_json().encode())
        digest.update(json.dumps(list(item.channel_names)).encode())
    else:
        files = [*item.image_files, *([item.label_file] if item.label_file else [])]
        digest.update(json.dumps([item.subset, [_path_stats(Path(f)) for f in files]]).encode())
        digest.update(json.dumps(item.meta, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def case_folder(out_dir: Path, case_id: str) -> Path:
    """``out_dir/cases/<id>``, the id percent-encoded: EM ids such as ``lucchi/training`` hold slashes."""
    return out_dir / "cases" / quote(case_id, safe="")


def _load(item: CaseRecord | Case) -> Case:
    return item if isinstance(item, Case) else item.load()


@dataclass
class PrepareResult:
    """What :func:`prepare_cases` did: ``prepared`` ids were (re)written, ``skipped`` were up to date."""

    out_dir: Path
    fingerprint: DatasetFingerprint
    plan: PreprocessingPlan
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    fingerprint_reused: bool = False
    split: Split | None = None
    split_error: str | None = None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrite only on change, so an up-to-date folder keeps its timestamps."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def write_prepared_case(case: Case, case_dir: Path, *, plan_digest: str, signature: str, subset: str) -> dict:
    """Write one preprocessed case as ``image.npy``, ``label.npy`` and ``case.json`` atomically.

    Returns:
        The ``case.json`` record.
    """
    record = {
        "case_id": case.case_id,
        "plan_digest": plan_digest,
        "source_signature": signature,
        "subset": subset,
        "labeled": case.labeled,
        "channel_names": list(case.channel_names),
        "label_names": {str(k): v for k, v in case.label_names.items()},
        "geometry": case.geometry.to_dict(),
        "shape_zyx": list(case.spatial_shape),
        "meta": case.meta,
    }
    text = _dumps(record)  # serialise first: a meta that is not JSON fails before anything is written
    with atomic_dir(case_dir) as tmp:
        np.save(tmp / "image.npy", np.ascontiguousarray(case.image, dtype=np.float32))
        if case.label is not None:
            np.save(tmp / "label.npy", np.ascontiguousarray(case.label, dtype=np.uint8))
        (tmp / "case.json").write_text(text, encoding="utf-8")
    return record


def prepare_cases(
    items: Sequence[CaseRecord | Case],
    spec: DatasetSpec,
    out_dir: str | os.PathLike,
    *,
    target_spacing_xy: float | tuple[float, float] | None = None,
    target_spacing_z: float | None = None,
    ct_window: tuple[float, float] | None = None,
    orientation: str | None = None,
    samples_per_case: int = SAMPLES_PER_CASE,
    seed: int = 0,
    progress: Progress | None = None,
) -> PrepareResult:
    """Fingerprint, plan and preprocess cases into ``out_dir`` (layout in the module docstring).

    Args:
        items: :class:`CaseRecord` (read lazily) or in-memory :class:`Case` objects; unique ids.
        spec: the dataset's spec (name, modality, label names).
        out_dir: destination folder (created).
        target_spacing_xy, target_spacing_z, ct_window, orientation: plan options, see
            :func:`~medsam_kit.data.preprocess.make_plan`.
        samples_per_case, seed: fingerprint sampling.
        progress: ``progress(done, total)``, one step per case read (fingerprint pass, then the
            cases that need preprocessing; ``total`` shrinks once the up-to-date cases are known).

    Returns:
        :class:`PrepareResult`; a second run with the same inputs prepares nothing.
    """
    out_dir = Path(out_dir)
    ids = [item.case_id for item in items]
    duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"case ids must be unique, found duplicates {duplicates[:5]}")
    for case_id in ids:
        if case_id in ("", ".", ".."):
            raise ValueError(f"case id {case_id!r} cannot name a folder under {out_dir / 'cases'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    signatures = [source_signature(item) for item in items]
    dataset_signature = hashlib.sha256(
        json.dumps([spec.name, samples_per_case, seed, sorted(zip(ids, signatures, strict=True))]).encode()
    ).hexdigest()[:16]

    n = len(items)
    fingerprint_path = out_dir / "fingerprint.json"
    previous = _read_json(fingerprint_path)
    reused = previous is not None and previous.get("source_signature") == dataset_signature
    if reused:
        fingerprint = DatasetFingerprint.from_dict(previous)
        steps_done = 0
    else:
        fingerprint = compute_fingerprint(
            (_load(item) for item in items),
            spec,
            samples_per_case=samples_per_case,
            seed=seed,
            source_signature=dataset_signature,
            progress=progress,
            total=2 * n,
        )
        fingerprint.save(fingerprint_path)
        steps_done = n

    plan = make_plan(
        fingerprint,
        target_spacing_xy=target_spacing_xy,
        target_spacing_z=target_spacing_z,
        ct_window=ct_window,
        orientation=orientation,
    )
    _write_if_changed(out_dir / "plan.json", _dumps(plan.to_dict()))
    preprocessor = Preprocessor(plan)
    result = PrepareResult(out_dir, fingerprint, plan, fingerprint_reused=reused)

    records: dict[str, dict] = {}  # case.json of every case, for the index
    todo = []
    for item, signature in zip(items, signatures, strict=True):
        existing = _read_json(case_folder(out_dir, item.case_id) / "case.json") or {}
        if (
            existing.get("plan_digest") == preprocessor.digest
            and existing.get("source_signature") == signature
        ):
            result.skipped.append(item.case_id)
            records[item.case_id] = existing
        else:
            todo.append((item, signature))
    total = steps_done + len(todo)
    if progress is not None:
        progress(steps_done, total)
    for done, (item, signature) in enumerate(todo, start=steps_done + 1):
        case = preprocessor.apply(_load(item))
        subset = item.subset if isinstance(item, CaseRecord) else str(case.meta.get("subset", ""))
        records[item.case_id] = write_prepared_case(
            case,
            case_folder(out_dir, item.case_id),
            plan_digest=preprocessor.digest,
            signature=signature,
            subset=subset,
        )
        result.prepared.append(item.case_id)
        if progress is not None:
            progress(done, total)

    entries = [
        {
            "case_id": case_id,
            "subset": records[case_id]["subset"],
            "labeled": records[case_id]["labeled"],
            "shape_zyx": records[case_id]["shape_zyx"],
            "spacing": records[case_id]["geometry"]["spacing"],
        }
        for case_id in ids
    ]
    index = {
        "version": INDEX_VERSION,
        "dataset": spec.name,
        "plan_digest": preprocessor.digest,
        "cases": entries,
    }
    _write_if_changed(out_dir / "cases.json", _dumps(index))
    return result


def prepare(
    dataset: str,
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split_protocol: str | None = None,
    split_seed: int = 0,
    labeled_budget: int | float | None = None,
    **options,
) -> PrepareResult:
    """Discover ``dataset``'s cases under ``src`` with its adapter, prepare them, write ``split.json``.

    Args:
        dataset: adapter name ('acdc', 'bhsd', 'brats', 'brats2021', 'em', 'nnunet').
        src: the raw dataset folder.
        out_dir: the prepared folder.
        split_protocol: protocol of :func:`medsam_kit.data.splits.make_split` for ``DIR/split.json``;
            None uses the dataset's default protocol, and a default that does not fit the folder
            (too few cases) is reported in :attr:`PrepareResult.split_error` instead of raised.
        split_seed, labeled_budget: passed to ``make_split``.
        options: those of :func:`prepare_cases` (``target_spacing_xy``, ``ct_window``, ``progress``, ...).
    """
    from medsam_kit.data.adapters import get_adapter  # the registry imports every adapter; only needed here

    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"{src}: dataset folder not found; point SRC at the raw {dataset} folder")
    adapter = get_adapter(dataset)
    records = adapter.discover(src)
    if not records:
        raise ValueError(f"{src}: no {dataset} cases found; check the folder layout (see data_prep/ docs)")
    spec = adapter.spec(src)
    result = prepare_cases(records, spec, out_dir, **options)
    protocol = split_protocol or DEFAULT_PROTOCOL.get(spec.name, "random")
    try:
        split = make_split(records, protocol, split_seed, labeled_budget)
    except ValueError as exc:
        if split_protocol is not None:
            raise
        result.split_error = f"no split.json: default protocol {protocol!r} does not fit this folder ({exc})"
        (result.out_dir / "split.json").unlink(missing_ok=True)  # a split of an earlier folder state is stale
    else:
        _write_if_changed(result.out_dir / "split.json", json.dumps(split.to_dict(), indent=2) + "\n")
        result.split = split
    return result


class PreparedDataset(Sequence[Case]):
    """Prepared cases, read lazily: ``dataset[i]`` loads case ``i`` (memory-mapped by default).

    Arrays of memory-mapped cases are read-only views of the files; copy before changing them.

    Attributes:
        root: the prepared folder; ``fingerprint``, ``plan``: as saved there;
        entries: index rows ``{"case_id", "subset", "labeled", "shape_zyx", "spacing"}``.
    """

    def __init__(
        self,
        root: Path,
        fingerprint: DatasetFingerprint,
        plan: PreprocessingPlan,
        entries: list[dict],
        mmap: bool = True,
    ) -> None:
        self.root, self.fingerprint, self.plan, self.entries, self.mmap = (
            root,
            fingerprint,
            plan,
            entries,
            mmap,
        )
        self._positions = {entry["case_id"]: i for i, entry in enumerate(entries)}

    @property
    def case_ids(self) -> list[str]:
        return [entry["case_id"] for entry in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int | slice) -> Case | PreparedDataset:  # type: ignore[override]
        if isinstance(index, slice):
            return PreparedDataset(self.root, self.fingerprint, self.plan, self.entries[index], self.mmap)
        return self.case(self.entries[index]["case_id"])

    def __iter__(self) -> Iterator[Case]:
        return (self.case(case_id) for case_id in self.case_ids)

    def case(self, case_id: str) -> Case:
        """Load one case by id (image float32 ``(C, Z, Y, X)``, label uint8 ``(Z, Y, X)`` or None)."""
        if case_id not in self._positions:
            raise KeyError(f"case {case_id!r} is not in {self.root / 'cases.json'}")
        folder = case_folder(self.root, case_id)
        record = _read_json(folder / "case.json")
        if record is None:
            raise FileNotFoundError(
                f"{folder / 'case.json'}: missing or unreadable; re-run medsam-kit prepare"
            )
        mode = "r" if self.mmap else None
        image = np.load(folder / "image.npy", mmap_mode=mode)
        label = np.load(folder / "label.npy", mmap_mode=mode) if record["labeled"] else None
        return Case(
            case_id,
            image,
            Geometry.from_dict(record["geometry"]),
            tuple(record["channel_names"]),
            label,
            {int(k): v for k, v in record["label_names"].items()},
            record["meta"],
        )

    def select(
        self, case_ids: Sequence[str] | None = None, *, labeled: bool | None = None, subset: str | None = None
    ) -> PreparedDataset:
        """A view with the given ids (in that order) and/or only (un)labeled cases / one subset."""
        if case_ids is not None:
            missing = [c for c in case_ids if c not in self._positions]
            if missing:
                raise KeyError(f"cases {missing[:5]} are not in {self.root / 'cases.json'}")
            entries = [self.entries[self._positions[c]] for c in case_ids]
        else:
            entries = list(self.entries)
        entries = [
            e
            for e in entries
            if (labeled is None or e["labeled"] == labeled) and (subset is None or e["subset"] == subset)
        ]
        return PreparedDataset(self.root, self.fingerprint, self.plan, entries, self.mmap)


def load_prepared(out_dir: str | os.PathLike, *, mmap: bool = True) -> PreparedDataset:
    """Open a folder written by :func:`prepare_cases` (checks that its index matches its plan)."""
    root = Path(out_dir)
    for name in ("fingerprint.json", "plan.json", "cases.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"{root / name}: not found; run `medsam-kit prepare DATASET SRC --out {root}` first"
            )
    plan = PreprocessingPlan.load(root / "plan.json")
    index = _read_json(root / "cases.json")
    if index is None or index.get("version") != INDEX_VERSION or "cases" not in index:
        raise ValueError(f"{root / 'cases.json'}: unreadable index; re-run medsam-kit prepare")
    if index.get("plan_digest") != plan.digest():
        raise ValueError(
            f"{root}: cases.json was written for another plan (interrupted prepare?); "
            "re-run medsam-kit prepare to finish it"
        )
    return PreparedDataset(
        root, DatasetFingerprint.load(root / "fingerprint.json"), plan, index["cases"], mmap
    )
