"""Label colours: one fixed palette, indexed by label value, for the server's answers and Slicer segments.

Values 1-10 take matplotlib's ``tab10`` colours in order, the colours the overlay PNGs of
:func:`medsam_kit.infer.output.write_overlay` draw label ``v`` with (``tab10(v - 1)``), so a structure
looks the same in an overlay and in 3D Slicer. Values above 10 (nnU-Net datasets with many
structures) step the hue by the golden angle at fixed saturation and brightness, which keeps
neighbouring values far apart on the colour wheel; the palette never depends on which labels exist,
so a value keeps its colour across models and sessions. Value 0 (background) has no colour.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping

#: ``tab10`` as 0-255 RGB (matplotlib's "category10"), label values 1..10.
TAB10 = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_GOLDEN = 0.618033988749895  # hue step (fraction of the wheel) for values past the table


def label_color(value: int) -> tuple[int, int, int]:
    """0-255 ``(r, g, b)`` of label ``value`` (>= 1)."""
    value = int(value)
    if value < 1:
        raise ValueError(f"label value {value} has no colour: 0 is the background, values start at 1")
    if value <= len(TAB10):
        return TAB10[value - 1]
    hue = (0.11 + (value - len(TAB10)) * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def label_table(label_names: Mapping[int, str]) -> list[dict]:
    """``[{"value": v, "name": str, "color": [r, g, b]}, ...]`` for every non-background label, by value."""
    return [{"value": int(v), "name": str(name), "color": list(label_color(v))}
            for v, name in sorted(label_names.items()) if int(v) != 0]
