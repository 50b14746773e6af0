"""BHSD brain haemorrhage CT: ``images/`` + ``ground truths/`` (or ``labels/``) + unlabeled pool.

Raw layout::

    ROOT/images/ID.nii.gz            head CT, int16 HU
    ROOT/ground truths/ID.nii.gz     uint8 0 bg, 1 EDH, 2 IPH, 3 IVH, 4 SAH, 5 SDH  (or ROOT/labels/)
    ROOT/unlabeled/ID.nii.gz         unlabeled pool (or ROOT/unlabelled/)

Case id = ID. An image in ``images/`` without a mask is unlabeled too (subset 'images'); the pool's
cases have subset 'unlabeled'. ``meta['pool']`` is True for cases from the unlabeled pool.
"""

from __future__ import annotations

from pathlib import Path

from medsam_kit.data.adapters._loading import build_case, read_label, volume_files
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import BHSD, DatasetSpec

_LABEL_FOLDERS = ("ground truths", "labels")
_POOL_FOLDERS = ("unlabeled", "unlabelled")


class BhsdAdapter(DatasetAdapter):
    """Reads the BHSD release: labeled volumes and the unlabeled pool."""

    name = "bhsd"

    def spec(self, root: Path) -> DatasetSpec:
        return BHSD

    def discover(self, root: Path) -> list[CaseRecord]:
        """Labeled, unlabeled-in-images and pool records under ``root``, sorted by case id.

        Raises:
            FileNotFoundError: no ``images/`` and no pool folder, or a mask without its image.
            ValueError: both ``ground truths/`` and ``labels/`` exist, or one ID appears twice.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected BHSD images/ and 'ground truths/')")
        images_dir = root / "images"
        label_dirs = [root / name for name in _LABEL_FOLDERS if (root / name).is_dir()]
        if len(label_dirs) > 1:
            raise ValueError(f"{root}: both 'ground truths/' and 'labels/' exist; keep one mask folder")
        pools = [root / name for name in _POOL_FOLDERS if (root / name).is_dir()]
        if not images_dir.is_dir() and not pools:
            raise FileNotFoundError(f"{root}: no images/ folder and no unlabeled/ pool; expected the BHSD "
                                    f"layout images/ID.nii.gz + 'ground truths'/ID.nii.gz")
        images = volume_files(images_dir) if images_dir.is_dir() else {}
        masks = volume_files(label_dirs[0]) if label_dirs else {}
        orphans = sorted(set(masks) - set(images))
        if orphans:
            raise FileNotFoundError(f"{label_dirs[0]}: masks without an image in {images_dir}: "
                                    f"{', '.join(orphans[:5])}{' ...' if len(orphans) > 5 else ''}")
        records = [CaseRecord(case_id, (path,), masks.get(case_id), "images", _load, {"pool": False}, read_label)
                   for case_id, path in images.items()]
        seen = {case_id: images_dir for case_id in images}
        for pool in pools:
            for case_id, path in volume_files(pool).items():
                if case_id in seen:
                    raise ValueError(f"BHSD case id {case_id!r} is in both {seen[case_id]} and {pool}; "
                                     f"case ids must be unique")
                seen[case_id] = pool
                records.append(CaseRecord(case_id, (path,), None, "unlabeled", _load, {"pool": True}))
        if not records:
            raise FileNotFoundError(f"{root}: no .nii.gz volumes in images/ or the unlabeled pool")
        return sorted(records, key=lambda r: r.case_id)


def _load(record: CaseRecord) -> Case:
    return build_case(record, BHSD)
