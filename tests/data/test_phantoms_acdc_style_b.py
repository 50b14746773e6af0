"""ACDC phantoms, style B: the raw layout the adapter and `check` accept, sound anatomy, a task
that a threshold cannot solve, determinism, and statistics that differ from style A."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam_kit.cli.main import main
from medsam_kit.data.adapters import get_adapter
from medsam_kit.data.integrity import check_dataset
from medsam_kit.data.phantoms import acdc_b, generate_phantoms, phantom_styles
from medsam_kit.io import read_volume

ACDC_KEYS = ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
CASES = 5


def _info(folder: Path) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in (folder / "Info.cfg").read_text().splitlines())


def _patients(root: Path) -> list[Path]:
    return sorted(root.glob("*/patient*"), key=lambda p: p.name)


def _frames(folder: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    stem = folder / f"{folder.name}_frame{frame:02d}"
    return read_volume(f"{stem}.nii.gz").array, read_volume(f"{stem}_gt.nii.gz").array


def _mid_slices(label: np.ndarray) -> np.ndarray:
    """The middle half of the slices that hold LV cavity."""
    slices = np.flatnonzero((label == 3).any(axis=(1, 2)))
    quarter = len(slices) // 4
    return slices[quarter:len(slices) - quarter]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_phantoms("acdc", tmp_path_factory.mktemp("acdc_b"), cases=CASES, seed=0, style="B")


def test_registered_as_style_b_of_acdc(tmp_path):
    assert phantom_styles("acdc") == {"A": "medsam_kit.data.phantoms.acdc", "B": "medsam_kit.data.phantoms.acdc_b"}
    assert list(phantom_styles("bhsd")) == ["A"]
    with pytest.raises(ValueError, match="no phantom style 'B' for 'bhsd'"):
        generate_phantoms("bhsd", tmp_path / "x", style="B")
    with pytest.raises(ValueError, match="styles: A, B"):
        generate_phantoms("acdc", tmp_path / "y", style="C")
    with pytest.raises(ValueError, match="unknown ACDC style-B phantom option"):
        acdc_b.generate(tmp_path / "z", cases=1, frames=30)


def test_layout_and_info(root):
    assert [p.name for p in sorted((root / "training").iterdir())] == [f"patient{i:03d}" for i in range(1, 5)]
    assert [p.name for p in (root / "testing").iterdir()] == ["patient005"]
    for folder in _patients(root):
        text = (folder / "Info.cfg").read_text()
        assert [line.split(":")[0] for line in text.splitlines()] == ACDC_KEYS
        info, p = _info(folder), folder.name
        ed, es, frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert ed == 1 and 1 < es < frames and 10 <= frames <= 12
        assert info["Group"] in acdc_b.GROUPS
        assert 140 < float(info["Height"]) < 200 and 30 < float(info["Weight"]) < 150
        frame_files = {f"{p}_frame{f:02d}{suffix}.nii.gz" for f in (ed, es) for suffix in ("", "_gt")}
        expected = {"Info.cfg", f"{p}_4d.nii.gz"} | frame_files
        assert {f.name for f in folder.iterdir()} == expected


def test_adapter_reads_it_and_check_finds_nothing(root):
    adapter = get_adapter("acdc")
    records = adapter.discover(root)
    assert len(records) == 2 * CASES and all(r.label_file is not None for r in records)
    case = records[0].load()
    assert case.image.ndim == 4 and case.label.shape == case.image.shape[1:]
    frames = adapter.cine_frames(records[0])
    assert len(frames) == int(records[0].meta["nb_frames"]) - 2  # all but the labeled ED and ES
    assert check_dataset("acdc", root) == []


def test_volumes_dtypes_and_anisotropic_oblique_geometry(root):
    for folder in _patients(root):
        info, p = _info(folder), folder.name
        cine = read_volume(folder / f"{p}_4d.nii.gz")
        assert cine.array.dtype == np.int16 and cine.array.shape[0] == int(info["NbFrame"])
        nz, ny, nx = cine.array.shape[1:]
        assert 7 <= nz <= 14 and 160 <= ny <= 256 and 160 <= nx <= 256
        sx, sy, sz = cine.geometry.spacing
        assert sx == pytest.approx(sy) and 1.2 <= sx <= 2.0 and 5.0 <= sz <= 10.0 and sz >= 2.5 * sx
        direction = cine.geometry.direction_matrix
        assert np.linalg.det(direction) == pytest.approx(1.0, abs=1e-4)
        assert np.abs(direction - np.diag(np.diag(direction))).max() > 0.1  # oblique
        for frame in (int(info["ED"]), int(info["ES"])):
            image, label = _frames(folder, frame)
            assert image.dtype == np.int16 and label.dtype == np.uint8
            np.testing.assert_array_equal(image, cine.array[frame - 1])
            assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_anatomy_mid_slices_complete_nested_and_contracting(root):
    for folder in _patients(root):
        _, ed = _frames(folder, 1)
        _, es = _frames(folder, int(_info(folder)["ES"]))
        assert set(np.unique(ed)) == {0, 1, 2, 3}
        mid = _mid_slices(ed)
        assert len(mid) >= 2
        assert np.mean([set(np.unique(ed[z])) == {0, 1, 2, 3} for z in mid]) >= 0.75
        # Nested: every in-plane neighbour of an LV voxel is LV or MYO on the mid slices.
        lv = ed[mid] == 3
        ring = np.zeros_like(lv)
        ring[:, 1:] |= lv[:, :-1]
        ring[:, :-1] |= lv[:, 1:]
        ring[:, :, 1:] |= lv[:, :, :-1]
        ring[:, :, :-1] |= lv[:, :, 1:]
        assert set(np.unique(ed[mid][ring & ~lv])) == {2}
        assert (es == 3).sum() < 0.9 * (ed == 3).sum()  # the cavity empties in systole
        assert (es == 1).sum() < (ed == 1).sum()


def test_single_threshold_cannot_segment_lv(root):
    """RV blood, atria, great vessels, stomach fluid and fat are as bright as the LV pool; the coil
    bias and dark papillary muscles do the rest."""
    dices = []
    for folder in _patients(root):
        image, label = _frames(folder, 1)
        image, mask = image.astype(float), label == 3
        best = 0.0
        for threshold in np.unique(np.percentile(image, np.linspace(1, 99.9, 300))):
            pred = image > threshold
            best = max(best, 2.0 * (pred & mask).sum() / (pred.sum() + mask.sum()))
        dices.append(best)
    assert max(dices) < 0.75 and np.mean(dices) < 0.6, dices


def test_deterministic_and_independent_of_case_count(tmp_path, root):
    acdc_b.generate(tmp_path / "same", cases=1, seed=0)
    acdc_b.generate(tmp_path / "other", cases=1, seed=1)
    rel = Path("training/patient001")
    for name in ("patient001_4d.nii.gz", "patient001_frame01_gt.nii.gz"):
        ours, fixture = read_volume(tmp_path / "same" / rel / name), read_volume(root / rel / name)
        np.testing.assert_array_equal(ours.array, fixture.array)
        assert ours.geometry.almost_equal(fixture.geometry)
    assert (tmp_path / "same" / rel / "Info.cfg").read_text() == (root / rel / "Info.cfg").read_text()
    other = read_volume(tmp_path / "other" / rel / "patient001_4d.nii.gz").array
    assert other.shape != fixture.array.shape or not np.array_equal(other, fixture.array)


def test_differs_from_style_a(root, phantom_factory):
    """Larger, non-standard grids, a scanner scale that varies by an order of magnitude and a heart
    that is often well off-centre (style A: ~128² grids, similar scales, heart near the centre)."""
    def statistics(dataset_root: Path) -> np.ndarray:
        rows = []
        for folder in _patients(dataset_root):
            image, label = _frames(folder, 1)
            ys, xs = np.nonzero((label == 3).any(axis=0))
            offset = np.hypot(ys.mean() / label.shape[1] - 0.5, xs.mean() / label.shape[2] - 0.5)
            rows.append((image.shape[1] * image.shape[2], image.max(), offset))
        return np.array(rows, dtype=float)

    a, b = statistics(phantom_factory("acdc")), statistics(root)
    assert b[:, 0].min() > a[:, 0].max()  # every style-B slice has more pixels than any style-A one
    assert b[:, 1].max() / b[:, 1].min() > max(2.0, a[:, 1].max() / a[:, 1].min())
    assert b[:, 2].max() > 0.12 > a[:, 2].max()


def test_cli_style_option(tmp_path, capsys):
    assert main(["phantoms", "acdc", "--style", "B", "--out", str(tmp_path / "b"), "--cases", "1"]) == 0
    assert "style B" in capsys.readouterr().out
    assert (tmp_path / "b" / "training" / "patient001" / "Info.cfg").is_file()
    assert main(["phantoms", "bhsd", "--style", "B", "--out", str(tmp_path / "bhsd")]) == 2
    assert "style(s) A" in capsys.readouterr().err
    assert not (tmp_path / "bhsd").exists()
