"""Prompt files a user (or a tool) got wrong in unusual ways: every problem is one line naming the file.

Python's own messages (``int()``: "invalid literal ...", ``math.isfinite``: "int too large to convert
to float", the JSON decoder's recursion and digit limits) name neither the file nor the key.
"""

from __future__ import annotations

import json

import pytest

from medsam_kit.prompts import load_prompt_file, parse_prompts

NAMES = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
SHAPE = (10, 160, 192)  # (Z, Y, X)


def _slice(key: str) -> dict:
    return {"labels": {"LV": {key: {"points": [[1, 1]]}}}}


@pytest.mark.parametrize("key, message", [
    ("²", r'slice key "²" is not a slice index \(a whole number 0\.\.9 in ASCII digits; it holds U\+00B2 '
          r'SUPERSCRIPT TWO\)'),
    ("٣", r'slice key "٣" is not a slice index .*U\+0663 ARABIC-INDIC DIGIT THREE'),  # int() would take it
    ("３", r'slice key "３" is not a slice index .*U\+FF13 FULLWIDTH DIGIT THREE'),
    ("-1", r'slice key "-1" is negative; slices are numbered 0\.\.9'),
    ("+3", r'slice key "\+3" is not a slice index'),
    (" 3", r'slice key " 3" is not a slice index'),
    ("3\u2028", r'slice key "3\\u2028" is not a slice index'),  # a line separator stays escaped: one line
    ("1" * 5000, r'slice key "1111111111\.\.\." \(5000 digits\) is outside the volume \(Z = 10 slices'),
    ("10", r"slice 10 is outside the volume \(Z = 10 slices, valid 0\.\.9\)"),
], ids=["superscript", "arabic-indic", "full-width", "negative", "plus", "space", "line-separator", "5000-digits",
        "past-the-end"])
def test_slice_keys_must_be_ascii_decimal_indices_inside_the_volume(key, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_prompts(_slice(key), SHAPE, None, NAMES, source="case1.json")
    text = str(info.value)
    assert text.startswith('case1.json: labels["LV"]') and len(text.splitlines()) == 1 and len(text) < 300


def test_leading_zeros_are_the_same_slice():
    assert parse_prompts(_slice("04"), SHAPE, None, NAMES).slices(3) == [4]


@pytest.mark.parametrize("text, message", [
    ('{"labels": {"LV": {"4": {"points": [[1e400, 1]]}}}}', r"points\[0\]: expected a point .*found \[Infinity, 1\]"),
    ('{"labels": {"LV": {"4": {"points": [[NaN, 1]]}}}}', r"points\[0\]: expected a point .*found \[NaN, 1\]"),
    ('{"labels": {"LV": {"4": {"boxes": [[1, 2, 3, -Infinity]]}}}}', r"boxes\[0\]: expected a box"),
    ('{"labels": {"LV": {"4": {"points": [[1' + "0" * 400 + ', 1]]}}}}',
     r"points\[0\]: expected a point .*\(2 finite numbers\), found \[10000000000"),
    ('{"labels": {"LV": {"4": {"points": [[1' + "0" * 5000 + ', 1]]}}}}',
     r"not valid JSON: a number with 5001 digits"),
    ('{"labels": ' + "[" * 100_000 + "]" * 100_000 + "}", r"not valid JSON: nested too deeply"),
    ('{"labels": {"LV": {"4": {"points": [[1, 1]]}, "4": {"points": [[2, 2]]}}}}',
     r"key \"4\" appears twice in one object"),
    ('{"labels": {"LV": {"4": {"points": [' + ", ".join(["[1, 2, 3]"] * 5000) + "]}}}}",
     r"points\[0\]: expected a point \[x, y\]"),
], ids=["1e400", "NaN", "-Infinity", "401-digit-int", "5001-digit-int", "deep-nesting", "duplicate-key",
        "5000-bad-points"])
def test_numbers_and_structure_python_cannot_handle_are_one_line(tmp_path, text, message):
    path = tmp_path / "prompts.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_prompt_file(path, SHAPE, None, NAMES)
    error = str(info.value)
    assert error.startswith(f"{path}: ") and "\n" not in error and len(error) < 400, error


def test_huge_value_in_a_message_is_shortened():
    doc = {"labels": {"LV": {"4": {"boxes": [list(range(10_000))]}}}}
    with pytest.raises(ValueError, match=r"found \[0, 1, 2, .*\.\.\.") as info:
        parse_prompts(doc, SHAPE, None, NAMES, source="p.json")
    assert len(str(info.value)) < 400
    with pytest.raises(ValueError, match=r"unknown label name 'LLLL.*\.\.\.; known: RV, MYO, LV") as info:
        parse_prompts({"labels": {"L" * 10_000: {"4": {"points": [[1, 1]]}}}}, SHAPE, None, NAMES, source="p.json")
    assert len(str(info.value)) < 400


def test_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"labels": {"LV": {"4": {"points": [[1, 1]]}}}, "note": "é"}'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.json: not UTF-8 text \(byte 0xe9 at offset 57\)"):
        load_prompt_file(path, SHAPE, None, NAMES)


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_slice("4")).encode())
    assert load_prompt_file(path, SHAPE, None, NAMES).slices(3) == [4]
