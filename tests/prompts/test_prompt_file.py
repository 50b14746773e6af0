"""The JSON prompt file: example files, voxel/world (LPS, RAS) conversion, round trips, error messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medsam_kit.io import Geometry
from medsam_kit.prompts import (
    BoxPrompt,
    PointPrompts,
    PromptSet,
    SlicePrompts,
    dump_prompt_file,
    load_prompt_file,
    parse_prompts,
    prompts_to_dict,
)

DATA = Path(__file__).parent / "data"
ACDC_NAMES = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
SHAPE = (10, 160, 192)  # (Z, Y, X)


def _oblique() -> Geometry:
    """Rotated about two axes and left-handed (one flipped column), anisotropic spacing."""
    direction = Rotation.from_euler("zx", [30, 20], degrees=True).as_matrix() @ np.diag([1.0, -1.0, 1.0])
    return Geometry(spacing=(0.7, 0.8, 2.5), origin=(-100.0, 50.0, 20.0), direction=tuple(map(tuple, direction)))


def _world(geometry: Geometry, i: float, j: float, k: float) -> list[float]:
    """Independent of the code under test: origin + D @ (spacing * ijk)."""
    d = np.asarray(geometry.direction)
    return list(np.asarray(geometry.origin) + d @ (np.asarray(geometry.spacing) * [i, j, k]))


def _sample_set() -> PromptSet:
    return PromptSet({
        3: {4: SlicePrompts(boxes=(BoxPrompt(100, 90, 131, 122),),
                            points=PointPrompts(np.array([[115, 105], [140.25, 105.5]]), np.array([1, 0])))},
        1: {2: SlicePrompts(boxes=(BoxPrompt(10, 20, 30, 40), BoxPrompt(50.5, 60, 70, 80.75))),
            9: SlicePrompts(points=PointPrompts(np.array([[0, 0], [191, 159]])))},
    })


def test_example_voxel_file_loads():
    ps = load_prompt_file(DATA / "acdc_prompts_voxel.json", SHAPE, None, ACDC_NAMES)
    assert ps.labels() == [2, 3] and ps.slices(3) == [4, 6]
    lv = ps.get(3, 4)
    assert lv.boxes[0].as_tuple() == (100, 90, 131, 122)
    assert lv.point_coords.tolist() == [[115, 105], [140, 105]] and lv.point_labels.tolist() == [1, 0]
    assert ps.get(3, 6).point_labels.tolist() == [1]  # labels default to positive
    assert ps.get(2, 4).boxes[0].as_tuple() == (92, 82, 139, 130)


def test_example_world_ras_file_converts_to_voxels():
    geometry = Geometry(spacing=(1.5, 1.5, 10.0))
    ps = load_prompt_file(DATA / "acdc_prompts_world_ras.json", SHAPE, geometry, ACDC_NAMES)
    rv = ps.get(1, 2)
    # RAS (-30, -45, 20) = LPS (30, 45, 20) = index (20, 30, 2); corners are box edges (index 9.5 = edge 10).
    assert rv.point_coords.tolist() == [[20.0, 30.0]]
    assert rv.boxes[0].as_tuple() == pytest.approx((10, 20, 30, 40))


def test_voxel_round_trip_is_exact(tmp_path):
    ps = _sample_set()
    path = tmp_path / "p.json"
    dump_prompt_file(path, ps, ACDC_NAMES)
    assert load_prompt_file(path, SHAPE, None, ACDC_NAMES) == ps
    doc = json.loads(path.read_text())
    assert doc["coordinates"] == "voxel" and doc["labels"]["LV"]["4"]["boxes"] == [[100, 90, 131, 122]]


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_world_round_trip_with_oblique_geometry(tmp_path, space):
    ps, geometry = _sample_set(), _oblique()
    path = tmp_path / "w.json"
    dump_prompt_file(path, ps, ACDC_NAMES, coordinates="world", geometry=geometry, space=space)
    back = load_prompt_file(path, SHAPE, geometry, ACDC_NAMES)
    assert back.labels() == ps.labels()
    for label, k, prompts in ps:
        got = back.get(label, k)
        np.testing.assert_allclose(got.boxes_array(), prompts.boxes_array(), atol=1e-9)
        np.testing.assert_allclose(got.point_coords, prompts.point_coords, atol=1e-9)
        assert got.point_labels.tolist() == prompts.point_labels.tolist()
    doc = json.loads(path.read_text())
    expected = np.asarray(_world(geometry, 140.25, 105.5, 4)) * ([-1, -1, 1] if space == "RAS" else 1)
    np.testing.assert_allclose(doc["labels"]["LV"]["4"]["points"][1], expected, atol=1e-9)


def test_world_point_maps_to_the_right_voxel_in_an_oblique_grid():
    geometry = _oblique()
    doc = {"coordinates": "world", "labels": {"MYO": {"7": {
        "points": [_world(geometry, 33, 44, 7), _world(geometry, 12.25, 80, 7.4)],
        "boxes": [[_world(geometry, 19.5, 29.5, 7), _world(geometry, 9.5, 59.5, 6.8)]]}}}}
    ps = parse_prompts(doc, SHAPE, geometry, ACDC_NAMES)
    np.testing.assert_allclose(ps.get(2, 7).point_coords, [[33, 44], [12.25, 80]], atol=1e-9)
    np.testing.assert_allclose(ps.get(2, 7).boxes_array(), [[10, 30, 20, 60]], atol=1e-9)


def _doc(**entry) -> dict:
    return {"coordinates": "voxel", "labels": {"LV": {"4": entry or {"boxes": [[1, 2, 3, 4]]}}}}


def _with(doc: dict, **top) -> dict:
    out = copy.deepcopy(doc)
    out.update(top)
    return out


@pytest.mark.parametrize("doc, message", [
    ({"labels": {"LVV": {"4": {"points": [[1, 1]]}}}},
     r"labels\[\"LVV\"\]: unknown label name 'LVV' \(did you mean 'LV'\?\); known: RV, MYO, LV"),
    ({"labels": {"background": {"4": {"points": [[1, 1]]}}}}, "is the background"),
    (_doc(boxes=[[1, 2, 3]]), r"boxes\[0\]: expected a box \[x0, y0, x1, y1\] \(4 finite numbers\), found \[1, 2, 3\]"),
    (_doc(boxes=[[5, 2, 3, 4]]), "empty or reversed"),
    (_doc(boxes=[[1, 2, 193, 4]]), r"outside the 160x192 \(Y x X\) slice.*x1 <= 192"),
    (_doc(boxes=[["1", 2, 3, 4]]), "4 finite numbers"),
    (_doc(points=[[192, 5]]), r"points\[0\]: point \(x=192, y=5\) is outside the 160x192"),
    (_doc(points=[[1, 2, 3]]), r"expected a point \[x, y\]"),
    (_doc(points=[[1, 2]], point_labels=[2]), "each 1 \\(positive\\) or 0"),
    (_doc(points=[[1, 2]], point_labels=[1, 0]), "one label per point \\(1\\)"),
    (_doc(boxes=[]), "neither boxes nor points"),
    (_doc(box=[[1, 2, 3, 4]]), r"unknown key\(s\) \['box'\]"),
    ({"labels": {"LV": {"10": {"points": [[1, 1]]}}}}, r"slice 10 is outside the volume \(Z = 10 slices, valid 0..9\)"),
    ({"labels": {"LV": {"mid": {"points": [[1, 1]]}}}}, "slice key \"mid\" is not a slice index"),
    (_with(_doc(), coordinates="mm"), "expected \"voxel\" or \"world\""),
    (_with(_doc(), space="RAS"), "only used with \"coordinates\": \"world\""),
    (_with(_doc(), coordinates="world"), "need the volume's geometry"),
    (_with(_doc(), version=2), "reads version 1"),
    (_with(_doc(), coordinate="world"), r"unknown top-level key\(s\) \['coordinate'\]"),
    ({"labels": []}, "expected an object"),
    ([1, 2], "expected a JSON object"),
])
def test_errors_name_the_problem(doc, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_prompts(doc, SHAPE, None, ACDC_NAMES, source="case1.json")
    text = str(info.value)
    assert text.startswith("case1.json") and "\n" not in text


def test_world_point_off_the_slice_plane_is_refused():
    geometry = _oblique()
    ok = {"coordinates": "world", "labels": {"LV": {"3": {"points": [_world(geometry, 20, 20, 3.49)]}}}}
    assert parse_prompts(ok, SHAPE, geometry, ACDC_NAMES).get(3, 3).point_coords[0] == pytest.approx([20, 20])
    bad = {"coordinates": "world", "labels": {"LV": {"3": {"points": [_world(geometry, 20, 20, 3.7)]}}}}
    with pytest.raises(ValueError, match=r"is 0.70 voxels from slice 3 \(index z = 3.70, allowed within 0.5\); "
                                         r"put it under slice 4"):
        parse_prompts(bad, SHAPE, geometry, ACDC_NAMES, source="f.json")
    outside = {"coordinates": "world", "labels": {"LV": {"3": {"points": [_world(geometry, -3, 20, 3)]}}}}
    with pytest.raises(ValueError, match=r"point \(x=-3, y=20\) is outside"):
        parse_prompts(outside, SHAPE, geometry, ACDC_NAMES)


def test_file_level_errors(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"labels": {"LV": }')
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON at line 1, column 19: Expecting value"):
        load_prompt_file(broken, SHAPE, None, ACDC_NAMES)
    with pytest.raises(FileNotFoundError):
        load_prompt_file(tmp_path / "missing.json", SHAPE, None, ACDC_NAMES)


def test_dump_refuses_what_the_file_cannot_hold():
    with pytest.raises(ValueError, match="mask prompts cannot be written"):
        prompts_to_dict(PromptSet({1: {0: SlicePrompts(mask=np.ones((4, 4)))}}), ACDC_NAMES)
    with pytest.raises(ValueError, match="label value 7 has no name"):
        prompts_to_dict(PromptSet({7: {0: SlicePrompts(boxes=(BoxPrompt(0, 0, 1, 1),))}}), ACDC_NAMES)
    with pytest.raises(ValueError, match="needs the volume's geometry"):
        prompts_to_dict(_sample_set(), ACDC_NAMES, coordinates="world")
