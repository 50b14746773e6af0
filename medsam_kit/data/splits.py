"""Deterministic train / val / test splits, saved as JSON you can read and edit.

A :class:`Split` lists case ids in five parts::

    {"version": 1, "protocol": "acdc", "seed": 0, "params": {"labeled_budget": 3, ...},
     "train_labeled": [...], "train_unlabeled": [...], "val": [...], "test": [...], "unused": [...]}

``train_unlabeled`` holds cases without labels and training cases whose labels are hidden by a
labeled budget (semi-supervised protocols); ``unused`` holds cases a protocol leaves out (ACDC's
``testing/`` patients, unlabeled frames of val/test patients), so every discovered case is
accounted for. Cases of one patient (``meta['patient']``, e.g. the ED and ES frames of an ACDC
patient, the timepoints of a BraTS 2023 patient) always land in the same part.

Protocols (:func:`make_split`):

* ``acdc``: the patients of ``training/`` split 70/10/20 train/val/test (the semi-supervised
  protocol of the field: 70/10/20 of 100); labeled budgets 1/3/7 patients. On a smaller folder
  the same proportions, at least one val and one test patient. Stratified by ``meta['group']``.
* ``bhsd``: labeled volumes half train / half test (96/96 on the official 192); the unlabeled
  pool goes to ``train_unlabeled``.
* ``brats``: 80/20 train/test, then ``val_fraction`` (default 10%) of train as val. Stratified by
  cohort (GLI/MEN/PED/SSA).
* ``em``: by stack name: ``train*`` → train, ``test*``/``val*`` → test (``meta['role']``).
* ``random``: ``fractions=(train, val, test)`` of the groups (default 0.7/0.1/0.2).

Groups are shuffled with ``random.Random(seed)`` (stable across Python versions) after sorting,
so a split depends only on the case ids, the protocol and the seed.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medsam_kit.data.adapters.base import CaseRecord
from medsam_kit.io import atomic_write_text

PARTS = ("train_labeled", "train_unlabeled", "val", "test", "unused")
SPLIT_VERSION = 1
ACDC_REFERENCE_TRAIN_PATIENTS = 70  # budgets 1/3/7 are counts out of the protocol's 70 training patients


@dataclass
class Split:
    """Case ids per part of a split; parts are disjoint sorted lists.

    Attributes:
        protocol: protocol name ('acdc', 'bhsd', 'brats', 'em', 'random', or 'custom').
        seed: shuffling seed.
        train_labeled, train_unlabeled, val, test, unused: case ids (see module docstring).
        params: the options the split was made with (budget, fractions, ...), for the record.
    """

    protocol: str
    seed: int
    train_labeled: list[str] = field(default_factory=list)
    train_unlabeled: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for part in PARTS:
            ids = sorted(str(i) for i in getattr(self, part))
            setattr(self, part, ids)
            for case_id in ids:
                if case_id in seen:
                    raise ValueError(f"split: case {case_id!r} is in both {seen[case_id]} and {part}; parts "
                                     f"must be disjoint")
                seen[case_id] = part

    @property
    def train(self) -> list[str]:
        """All training case ids (labeled and unlabeled)."""
        return sorted(self.train_labeled + self.train_unlabeled)

    def part_of(self, case_id: str) -> str | None:
        """Name of the part holding ``case_id`` (None when the split does not list it)."""
        return next((p for p in PARTS if case_id in getattr(self, p)), None)

    def counts(self) -> dict[str, int]:
        """``{part: number of cases}``."""
        return {p: len(getattr(self, p)) for p in PARTS}

    def select(self, records: Sequence[CaseRecord], part: str) -> list[CaseRecord]:
        """The records of one part, in the split's order.

        Raises:
            ValueError: unknown part name.
            KeyError: the split names cases absent from ``records`` (wrong dataset folder?).
        """
        if part not in (*PARTS, "train"):
            raise ValueError(f"unknown split part {part!r}; choose one of {', '.join((*PARTS, 'train'))}")
        by_id = {r.case_id: r for r in records}
        ids = self.train if part == "train" else getattr(self, part)
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise KeyError(f"split part {part} names {len(missing)} case(s) not found in the dataset "
                           f"(e.g. {', '.join(missing[:3])}); was the split made for another folder?")
        return [by_id[i] for i in ids]

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        data = asdict(self)
        return {"version": SPLIT_VERSION, "protocol": data.pop("protocol"), "seed": data.pop("seed"),
                "params": data.pop("params"), **data}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the split as indented JSON (atomically); returns the path."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str = "split") -> Split:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object with {', '.join(PARTS)}")
        version = data.get("version", SPLIT_VERSION)
        if version != SPLIT_VERSION:
            raise ValueError(f"{source}: split format version {version} is not supported "
                             f"(expected {SPLIT_VERSION})")
        missing = [k for k in ("protocol", "train_labeled", "val", "test") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing key(s) {', '.join(missing)}")
        for part in PARTS:
            value = data.get(part, [])
            if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
                raise ValueError(f"{source}: '{part}' must be a list of case id strings")
        try:
            return cls(protocol=str(data["protocol"]), seed=int(data.get("seed", 0)),
                       params=dict(data.get("params", {})), **{p: list(data.get(p, [])) for p in PARTS})
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        """Read a split written by :meth:`save` (or by hand in the same format)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such split file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=str(path))


# --------------------------------------------------------------------- groups
def patient_of(record: CaseRecord) -> str:
    """Grouping key: ``meta['patient']`` when the adapter knows it, else the case id."""
    return str(record.meta.get("patient") or record.case_id)


class _Groups:
    """Records grouped by patient; :meth:`ordered` gives a seeded order interleaving strata proportionally.

    Any prefix of an ordered list holds the strata in about their overall proportions, so cutting
    test, val, train and the labeled budget off it keeps every part balanced.
    """

    def __init__(self, records: Sequence[CaseRecord], seed: int, stratify_by: str | None) -> None:
        duplicates = sorted(i for i, n in Counter(r.case_id for r in records).items() if n > 1)
        if duplicates:
            raise ValueError(f"case ids must be unique to split, found duplicates: "
                             f"{', '.join(duplicates[:5])}")
        self.seed, self.stratify_by = seed, stratify_by
        self.members: dict[str, list[CaseRecord]] = {}
        for record in sorted(records, key=lambda r: r.case_id):
            self.members.setdefault(patient_of(record), []).append(record)
        self.all = sorted(self.members)

    def ordered(self, groups: Sequence[str]) -> list[str]:
        """``groups`` shuffled (seeded), strata interleaved by their proportion."""
        rng = random.Random(self.seed)
        strata: dict[str, list[str]] = {}
        for group in sorted(groups):
            stratum = self.members[group][0].meta.get(self.stratify_by) if self.stratify_by else None
            strata.setdefault(str(stratum), []).append(group)
        keyed = []
        for rank, name in enumerate(sorted(strata)):
            members = strata[name]
            rng.shuffle(members)
            keyed += [((i + 0.5) / len(members), rank, g) for i, g in enumerate(members)]
        return [g for *_, g in sorted(keyed)]

    def labeled(self, group: str) -> bool:
        return any(r.labeled for r in self.members[group])

    def split_labeled(self, groups: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
        """(labeled groups in seeded order, unlabeled groups) among ``groups`` (default all)."""
        groups = self.all if groups is None else groups
        labeled = {g for g in groups if self.labeled(g)}
        return self.ordered(sorted(labeled)), [g for g in groups if g not in labeled]

    def ids(self, groups: Sequence[str], labeled: bool | None = None) -> list[str]:
        return [r.case_id for g in groups for r in self.members[g] if labeled is None or r.labeled == labeled]


def _count(fraction: float, n: int, at_least_one: bool) -> int:
    count = int(round(fraction * n))
    return max(count, 1) if at_least_one and fraction > 0 and n > 0 else count


def _budget(labeled_budget: int | float | None, n_train: int, reference: int | None) -> int:
    """Number of labeled training groups: all (None), a count (int), or a fraction (float in (0, 1])."""
    if labeled_budget is None:
        return n_train
    if isinstance(labeled_budget, float):
        if not 0 < labeled_budget <= 1:
            raise ValueError(f"labeled_budget as a fraction (float) must be in (0, 1], got {labeled_budget}; "
                             f"give an int for a number of patients")
        return max(1, int(round(labeled_budget * n_train)))
    count = int(labeled_budget)
    if count < 1:
        raise ValueError(f"labeled_budget must be at least 1 patient/case, got {labeled_budget}")
    if reference is not None and n_train != reference:
        count = max(1, int(round(count * n_train / reference)))  # same proportion on a smaller/larger folder
    if count > n_train:
        raise ValueError(f"labeled_budget {labeled_budget} is more than the {n_train} training "
                         f"patients/cases")
    return count


def _assemble(groups: _Groups, protocol: str, seed: int, train: list[str], val: list[str], test: list[str],
              unused: list[str], unlabeled_train: list[str], budget: int, params: dict) -> Split:
    """Turn group lists into a Split: the first ``budget`` labeled train groups keep their labels."""
    labeled_train = [g for g in train if groups.labeled(g)]
    kept = labeled_train[:budget]
    hidden = [g for g in train if g not in kept]
    return Split(
        protocol=protocol, seed=seed, params=params,
        train_labeled=groups.ids(kept, labeled=True),
        train_unlabeled=groups.ids(hidden) + groups.ids(kept, labeled=False) + groups.ids(unlabeled_train),
        val=groups.ids(val, labeled=True), test=groups.ids(test, labeled=True),
        # Unlabeled cases of val/test patients would leak those patients into training.
        unused=groups.ids(val, labeled=False) + groups.ids(test, labeled=False) + groups.ids(unused),
    )


def _cut(order: list[str], n_test: int, n_val: int, protocol: str) -> tuple[list[str], list[str], list[str]]:
    if len(order) - n_test - n_val < 1:
        raise ValueError(f"{protocol} split: {len(order)} labeled patients/cases are too few for {n_val} "
                         f"val + {n_test} test + at least 1 train")
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


# ------------------------------------------------------------------ protocols
def _acdc(records, seed, labeled_budget, val_fraction, fractions):
    groups = _Groups(records, seed, stratify_by="group")
    has_training = any(r.subset == "training" for r in records)
    pool = [g for g in groups.all if not has_training or groups.members[g][0].subset == "training"]
    unused = sorted(set(groups.all) - set(pool))
    labeled, unlabeled = groups.split_labeled(pool)
    n = len(labeled)
    train, val, test = _cut(labeled, _count(0.2, n, True), _count(0.1, n, True), "acdc")
    budget = _budget(labeled_budget, len(train), ACDC_REFERENCE_TRAIN_PATIENTS)
    return groups, train, val, test, unused, unlabeled, budget, {}


def _bhsd(records, seed, labeled_budget, val_fraction, fractions):
    groups = _Groups(records, seed, stratify_by=None)
    labeled, unlabeled = groups.split_labeled()
    n = len(labeled)
    n_test = n // 2  # official 96/96 of 192 labeled volumes: half and half
    n_val = _count(val_fraction or 0.0, n - n_test, True)
    train, val, test = _cut(labeled, n_test, n_val, "bhsd")
    return groups, train, val, test, [], unlabeled, _budget(labeled_budget, len(train), None), {}


def _brats(records, seed, labeled_budget, val_fraction, fractions):
    groups = _Groups(records, seed, stratify_by="cohort")
    labeled, unlabeled = groups.split_labeled()
    n = len(labeled)
    n_test = _count(0.2, n, True)
    fraction = 0.1 if val_fraction is None else val_fraction
    n_val = _count(fraction, n - n_test, True) if n - n_test > 1 else 0
    train, val, test = _cut(labeled, n_test, n_val, "brats")
    budget = _budget(labeled_budget, len(train), None)
    return groups, train, val, test, [], unlabeled, budget, {"val_fraction": fraction}


def _em(records, seed, labeled_budget, val_fraction, fractions):
    groups = _Groups(records, seed, stratify_by="domain")

    def is_test(group: str) -> bool:
        return groups.members[group][0].meta.get("role") == "test"

    labeled, unlabeled = groups.split_labeled()
    # Labeled stacks without a train/test name are training data; unlabeled test stacks stay out.
    test = [g for g in labeled if is_test(g)]
    train_pool = groups.ordered([g for g in labeled if not is_test(g)])
    n_val = _count(val_fraction or 0.0, len(train_pool), True) if len(train_pool) > 1 else 0
    val, train = train_pool[:n_val], train_pool[n_val:]
    if not train:
        raise ValueError("em split: no labeled training stack (names with 'train', e.g. training.tif)")
    unused = [g for g in unlabeled if is_test(g)]
    unlabeled = [g for g in unlabeled if not is_test(g)]
    return groups, train, val, test, unused, unlabeled, _budget(labeled_budget, len(train), None), {}


def _random(records, seed, labeled_budget, val_fraction, fractions):
    fractions = tuple(fractions or (0.7, 0.1, 0.2))
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test) summing to 1, "
                         f"got {fractions}")
    groups = _Groups(records, seed, stratify_by=None)
    labeled, unlabeled = groups.split_labeled()
    n = len(labeled)
    train, val, test = _cut(labeled, _count(fractions[2], n, True), _count(fractions[1], n, True), "random")
    return (groups, train, val, test, [], unlabeled, _budget(labeled_budget, len(train), None),
            {"fractions": list(fractions)})


PROTOCOLS: dict[str, Callable] = {"acdc": _acdc, "bhsd": _bhsd, "brats": _brats, "em": _em, "random": _random}
#: dataset name -> protocol used when none is given
DEFAULT_PROTOCOL = {"acdc": "acdc", "bhsd": "bhsd", "brats": "brats", "brats2021": "brats", "em": "em",
                    "nnunet": "random"}


def make_split(records: Sequence[CaseRecord], protocol: str, seed: int = 0,
               labeled_budget: int | float | None = None, *, val_fraction: float | None = None,
               fractions: Sequence[float] | None = None) -> Split:
    """Split discovered cases by a named protocol (see module docstring), deterministically.

    Args:
        records: the dataset's records (from ``adapter.discover``); ids must be unique.
        protocol: 'acdc', 'bhsd', 'brats', 'em' or 'random'.
        seed: shuffling seed; the same records, protocol and seed give the same split.
        labeled_budget: labeled training patients/cases to keep; the other training cases go to
            ``train_unlabeled``. None keeps all; an int is a count (for 'acdc' a count out of the
            protocol's 70 training patients — 1, 3 or 7 — scaled to the folder's size, at least 1);
            a float in (0, 1] is a fraction of the training patients.
        val_fraction: share of the training patients held out as val ('brats' default 0.1;
            'bhsd', 'em' default 0; 'acdc' and 'random' fix val otherwise and ignore it).
        fractions: ``(train, val, test)`` for 'random'.

    Returns:
        The :class:`Split`; ``params`` records the options.

    Raises:
        ValueError: unknown protocol, too few labeled cases, bad budget or fractions.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not records:
        raise ValueError("no cases to split")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups, train, val, test, unused, unlabeled, budget, extra = PROTOCOLS[protocol](
        records, seed, labeled_budget, val_fraction, fractions)
    params = {"labeled_budget": labeled_budget, "labeled_groups": budget, **extra}
    if val_fraction is not None:
        params["val_fraction"] = val_fraction
    return _assemble(groups, protocol, seed, train, val, test, unused, unlabeled, budget, params)
