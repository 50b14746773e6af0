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
from medsam_kit.data.adapters.base import CaseRecord, DatasetAdapter, DiscoveryProblem, check_unique_ids, report
from medsam_kit.data.case import Case
from medsam_kit.data.datasets import BHSD, DatasetSpec

_LABEL_FOLDERS = ("ground truths", "labels")
_POOL_FOLDERS = ("unlabeled", "unlabelled")


class BhsdAdapter(DatasetAdapter):
    """Reads the BHSD release: labeled volumes and the unlabeled pool."""

    name = "bhsd"

    def spec(self, root: Path) -> DatasetSpec:
        return BHSD

    def discover(self, root: Path, problems: list[DiscoveryProblem] | None = None) -> list[CaseRecord]:
        """Labeled, unlabeled-in-images and pool records under ``root``, sorted by case id.

        Args:
            root: the BHSD folder.
            problems: None for strict discovery; a list collects bad cases, which are skipped
                (see :class:`~medsam_kit.data.adapters.base.DatasetAdapter`).

        Raises:
            FileNotFoundError: no ``images/`` and no pool folder, or (strict) a mask without its image.
            ValueError: (strict) both ``ground truths/`` and ``labels/`` exist (non-strict: the
                first is used), or one ID appears twice.
        """
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder (expected BHSD images/ and 'ground truths/')")
        images_dir = root / "images"
        label_dirs = [root / name for name in _LABEL_FOLDERS if (root / name).is_dir()]
        if len(label_dirs) > 1:
            report(problems, ValueError(f"{root}: both 'ground truths/' and 'labels/' exist; keep one mask "
                                        f"folder (checked: {label_dirs[0].name}/)"), label_dirs[1])
        pools = [root / name for name in _POOL_FOLDERS if (root / name).is_dir()]
        if not images_dir.is_dir() and not pools:
            raise FileNotFoundError(f"{root}: no images/ folder and no unlabeled/ pool; expected the BHSD "
                                    f"layout images/ID.nii.gz + 'ground truths'/ID.nii.gz")
        images = volume_files(images_dir, problems=problems) if images_dir.is_dir() else {}
        masks = volume_files(label_dirs[0], problems=problems) if label_dirs else {}
        for case_id in sorted(set(masks) - set(images)):
            mask = masks[case_id]
            report(problems, FileNotFoundError(f"{mask}: mask without an image (expected {images_dir / mask.name}); "
                                               f"add the image or remove the mask"), mask, case_id)
        records = [CaseRecord(case_id, (path,), masks.get(case_id), "images", _load, {"pool": False}, read_label)
                   for case_id, path in images.items()]
        for pool in pools:
            for case_id, path in volume_files(pool, problems=problems).items():
                records.append(CaseRecord(case_id, (path,), None, "unlabeled", _load, {"pool": True}))
        if not records and not problems:
            raise FileNotFoundError(f"{root}: no .nii.gz volumes in images/ or the unlabeled pool")
        check_unique_ids(records, problems)
        return sorted(records, key=lambda r: r.case_id)


def _load(record: CaseRecord) -> Case:
    return build_case(record, BHSD)
