"""``medsam-kit check DATASET DIR``: one line per problem, errors first, a summary, exit 0/1/2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam_kit.cli import main as cli_main
from medsam_kit.io import Geometry, Volume, write_volume

SHAPE = (4, 6, 8)


@pytest.fixture(autouse=True)
def only_check_verb(monkeypatch):
    """Build the parser with the check verb alone, so other verbs being written cannot break these tests."""
    monkeypatch.setattr(cli_main, "VERBS", ("check",))


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 200, SHAPE).astype(np.int16)


def _label(value: int = 2) -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 2:4, 2:6] = value
    return label


def make_bhsd(root: Path, lesion_free: bool = False) -> Path:
    geometry = Geometry((0.45, 0.45, 5.0), (-100.0, -120.0, 40.0))
    for index, case in enumerate(("ID_001", "ID_002", "ID_003")):
        write_volume(root / "images" / f"{case}.nii.gz", Volume(_image(index), geometry))
        label = _label(0 if lesion_free and case == "ID_003" else 2)
        write_volume(root / "ground truths" / f"{case}.nii.gz", Volume(label, geometry))
    return root


def run_check(capsys, *args: str) -> tuple[int, list[str], str]:
    code = cli_main.main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err


def test_clean_dataset_exits_0_with_summary(tmp_path, capsys):
    code, lines, err = run_check(capsys, "bhsd", str(make_bhsd(tmp_path)))
    assert code == 0
    assert lines == ["3 cases checked, 0 errors, 0 warnings"]
    assert "Traceback" not in err


def test_warnings_alone_do_not_fail(tmp_path, capsys):
    root = make_bhsd(tmp_path, lesion_free=True)
    code, lines, _ = run_check(capsys, "bhsd", str(root))
    assert code == 0
    assert lines == [f"warning [empty-label] {root / 'ground truths' / 'ID_003.nii.gz'}: label map is all "
                     "background (0) — nothing to do: lesion-free scans are normal in BHSD",
                     "3 cases checked, 0 errors, 1 warnings"]


def test_errors_exit_1_and_come_before_warnings(tmp_path, capsys):
    root = make_bhsd(tmp_path, lesion_free=True)
    bad_label, truncated = root / "ground truths" / "ID_002.nii.gz", root / "images" / "ID_001.nii.gz"
    write_volume(bad_label, Volume(_label(7), Geometry((0.45, 0.45, 5.0), (-100.0, -120.0, 40.0))))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    code, lines, err = run_check(capsys, "bhsd", str(root))
    assert code == 1
    assert len(lines) == 4
    assert lines[0].startswith(f"error [unreadable] {truncated}: ")
    assert lines[1].startswith(f"error [label-values] {bad_label}: ") and "7 (16 voxels)" in lines[1]
    assert lines[2].startswith("warning [empty-label] ")
    assert lines[3] == "3 cases checked, 2 errors, 1 warnings"
    assert "Traceback" not in err


def test_max_problems_limits_lines_not_counts(tmp_path, capsys):
    root = make_bhsd(tmp_path)
    for case in ("ID_001", "ID_002", "ID_003"):
        (root / "images" / f"{case}.nii.gz").write_bytes(b"garbage")
    code, lines, _ = run_check(capsys, "bhsd", str(root), "--max-problems", "1")
    assert code == 1
    assert len(lines) == 3 and lines[0].startswith("error [unreadable] ")
    assert lines[1] == "... 2 more problems not shown (--max-problems 0 lists all)"
    assert lines[2] == "3 cases checked, 3 errors, 0 warnings"
    code, lines, _ = run_check(capsys, "bhsd", str(root), "--max-problems", "0")
    assert len(lines) == 4


def test_missing_folder_is_one_problem_line(tmp_path, capsys):
    code, lines, err = run_check(capsys, "brats", str(tmp_path / "nowhere"))
    assert code == 1
    assert lines == [f"error [discovery] {tmp_path / 'nowhere'}: dataset folder does not exist — give the "
                     "root folder of the raw brats layout", "0 cases checked, 1 errors, 0 warnings"]
    assert "Traceback" not in err


def test_unknown_dataset_is_a_one_line_error_exit_2(tmp_path, capsys):
    code, lines, err = run_check(capsys, "lidc", str(tmp_path))
    assert code == 2 and lines == []
    assert err.count("\n") == 1 and "lidc" in err and "acdc" in err and "Traceback" not in err


def test_help_explains_what_is_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main.main(["check", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("spacing/origin within a thousandth of a voxel", "NaN or Inf", "label-values", "dataset.json",
                   "Exit status: 0 when there are no errors", "--max-problems N"):
        assert phrase in text, phrase


def test_discovery_problems_do_not_stop_the_check(tmp_path, capsys):
    root = make_bhsd(tmp_path)
    geometry = Geometry((0.45, 0.45, 5.0), (-100.0, -120.0, 40.0))
    write_volume(root / "ground truths" / "ID_404.nii.gz", Volume(_label(), geometry))  # mask without image
    (root / "ground truths" / "ID_002.nii.gz").unlink()
    (root / "ground truths" / "ID_002.nii.gz").symlink_to(tmp_path / "moved.nii.gz")  # dangling
    write_volume(root / "images" / "ID_003.nii.gz", Volume(np.stack([_image(3), _image(4)]), geometry))
    code, lines, err = run_check(capsys, "bhsd", str(root))
    assert code == 1 and "Traceback" not in err
    assert [line.split(" ")[1] for line in lines[:-1]] == ["[discovery]", "[missing-file]", "[channel-count]"]
    assert lines[0].startswith(f"error [discovery] {root / 'ground truths' / 'ID_404.nii.gz'}: mask without an image")
    assert "broken symbolic link" in lines[1] and "found 2 channels" in lines[2]
    assert lines[-1] == "3 cases checked, 3 errors, 0 warnings"
