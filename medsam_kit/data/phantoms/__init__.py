"""Synthetic phantoms written in each dataset's raw layout (docs/design.md §4).

Real data cannot be downloaded where this toolkit is built and tested, so every dataset
family has a generator that writes the same file names, dtypes, label values, orientation and
anisotropy as the real release, with a task that is not trivial (confusable neighbours,
intensity inhomogeneity, noise, partial volume, variability between cases).

Each generator module exposes
``generate(out_dir: Path, *, cases: int | None = None, seed: int = 0, progress=None, **options)``
where ``cases=None`` uses the module's small default and ``progress`` (optional) is called as
``progress(done, total)`` after each case.

Styles: a dataset may have more than one *independently written* generator. Style ``"A"`` is
always the module of :data:`GENERATORS`; :data:`STYLES` adds the others (ACDC style ``"B"``,
:mod:`medsam_kit.data.phantoms.acdc_b`). Settings tuned on one style should be reported on
another, so a result that only holds for one simulator's quirks shows up as such.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from medsam_kit.io.atomic import atomic_dir

#: dataset name -> (module, fixed options). 'brats2021' is BraTS with the 2021 file naming.
GENERATORS: dict[str, tuple[str, dict]] = {
    "acdc": ("medsam_kit.data.phantoms.acdc", {}),
    "bhsd": ("medsam_kit.data.phantoms.bhsd", {}),
    "brats": ("medsam_kit.data.phantoms.brats", {"naming": "2023"}),
    "brats2021": ("medsam_kit.data.phantoms.brats", {"naming": "2021"}),
    "em": ("medsam_kit.data.phantoms.em", {}),
}

#: dataset name -> {style: module} for styles beyond the default "A" (the module of GENERATORS).
STYLES: dict[str, dict[str, str]] = {
    "acdc": {"B": "medsam_kit.data.phantoms.acdc_b"},
}
DEFAULT_STYLE = "A"


def phantom_styles(dataset: str) -> dict[str, str]:
    """``{style: generator module}`` for ``dataset``, default style ``"A"`` first.

    Raises:
        ValueError: no generator for ``dataset``.
    """
    if dataset not in GENERATORS:
        raise ValueError(f"no phantom generator for {dataset!r}; choose one of {', '.join(GENERATORS)}")
    return {DEFAULT_STYLE: GENERATORS[dataset][0], **STYLES.get(dataset, {})}


def require_empty_or_overwrite(folder: Path, overwrite: bool, what: str) -> None:
    """Refuse to mix a new synthetic set into a folder that already holds files (stale cases would
    silently join the new ones) unless ``overwrite`` replaces the folder as a whole."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder; choose another {what} folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder}: folder is not empty; choose a new {what} folder or pass "
                              f"--overwrite to replace it")


def generate_phantoms(dataset: str, out_dir: str | Path, *, cases: int | None = None, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None, overwrite: bool = False,
                      style: str = DEFAULT_STYLE, **options) -> Path:
    """Write a synthetic dataset in the raw layout of ``dataset`` under ``out_dir``.

    Args:
        dataset: one of :data:`GENERATORS` ('acdc', 'bhsd', 'brats', 'brats2021', 'em').
        out_dir: destination folder (created).
        cases: number of cases (patients / volumes / stacks); None for the generator's default.
        seed: deterministic seed; the same seed gives the same files.
        progress: optional ``progress(done, total)`` callback.
        overwrite: replace a non-empty ``out_dir`` (default: refuse, so runs never mix).
        style: which independently written generator to use (see :func:`phantom_styles`); "A"
            (default) for every dataset, "B" also for 'acdc'. Case-insensitive.

    Returns:
        ``out_dir`` as a Path.
    """
    styles = phantom_styles(dataset)
    style = str(style).upper()
    if style not in styles:
        raise ValueError(f"no phantom style {style!r} for {dataset!r}; styles: {', '.join(styles)}")
    if cases is not None and cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    module_name = styles[style]
    fixed = GENERATORS[dataset][1]  # layout variants (e.g. BraTS file naming) hold for every style
    out_dir = Path(out_dir)
    require_empty_or_overwrite(out_dir, overwrite, "output")
    # Written beside the target and swapped in whole: an interrupted run leaves no half dataset.
    with atomic_dir(out_dir) as tmp:
        importlib.import_module(module_name).generate(tmp, cases=cases, seed=seed, progress=progress,
                                                      **{**fixed, **options})
    return out_dir
