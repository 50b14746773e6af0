"""``medsam-kit predict``: segment volumes (prompted or automatic) and write them on the input's grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from medsam_kit.cli._progress import progress_bar

_EPILOG = """\
inputs and outputs:
  --input FILE   one volume (NIfTI, NRRD, MHA, TIFF, HDF5, or a DICOM / slice folder);
                 --output is the label file (OUT.nii.gz) or a folder (gets <case>.nii.gz).
  --input DIR    every volume file directly in DIR (batch, with a progress bar); --output
                 is a folder. A DIR holding no volume files is read as one volume (DICOM).
  Next to each label file: <case>.json (label values and names, mode, geometry),
  with --probabilities <case>_prob_<name>.nii.gz, with --overlay <case>_overlay.png.
  Labels are on the input's grid with its spacing / origin / direction.

prompts:
  without --prompts every volume is segmented automatically (coarse head -> PCSW prompts
  -> decoder -> propagation). --prompts FILE is a medsam-kit prompt file (see
  medsam_kit.prompts.user_file) for a single input; --prompts DIR holds <case>.json per
  input volume (volumes without one are segmented automatically).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment volumes with a trained run or a model checkpoint (prompted or automatic)",
        description="Segment one volume or a folder of volumes slice by slice with a SAM-family model:\n"
                    "from prompts (boxes / points on some slices, propagated through the volume) or\n"
                    "automatically; write labels with the input's geometry and a JSON sidecar.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training run folder (model, plan, label names from it)")
    source.add_argument("--model", help="registry model name (see medsam_kit.models.list_models); random "
                                        "weights unless --checkpoint is given")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint for --model (official SAM / SAM-2 / MedSAM file or a medsam_kit one)")
    parser.add_argument("--input", required=True, type=Path, help="volume file, or a folder of volume files")
    parser.add_argument("--output", required=True, type=Path,
                        help="label file (e.g. out.nii.gz) for one input, or an output folder")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="prompt JSON file (one input) or folder of <case>.json; default: automatic mode")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--overlay", action="store_true", help="also write a PNG montage of labelled slices")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per encoder call (default 8)")
    parser.add_argument("--mode", choices=("longest", "native"), default=None,
                        help="how slices meet the model input: 'longest' resizes whole slices (SAM style, default "
                             "for official weights), 'native' uses windows at the training resolution (default "
                             "for --run and medsam_kit checkpoints)")
    parser.add_argument("--cache-mb", type=int, default=1024,
                        help="bound of the slice-embedding cache in MiB (default 1024)")
    parser.set_defaults(func=run)


def _inputs(path: Path) -> list[Path]:
    from medsam_kit.io import VOLUME_SUFFIXES

    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist; give a volume file or a folder of volumes")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()
                   and p.name.lower().endswith(VOLUME_SUFFIXES))
    return files or [path]  # no volume files: the folder itself is one volume (DICOM / slices)


def _output_for(case: Path, output: Path, single: bool) -> Path:
    from medsam_kit.io import strip_volume_suffix

    if single and strip_volume_suffix(output.name) != output.name:
        return output
    return output / f"{strip_volume_suffix(case.name)}.nii.gz"


def _prompt_file(case: Path, prompts: Path | None, single: bool) -> Path | None:
    from medsam_kit.io import strip_volume_suffix

    if prompts is None:
        return None
    if prompts.is_dir():
        candidate = prompts / f"{strip_volume_suffix(case.name)}.json"
        return candidate if candidate.exists() else None
    if not prompts.exists():
        raise FileNotFoundError(f"--prompts {prompts} does not exist")
    if not single:
        raise ValueError(f"--prompts {prompts} is one file but --input holds several volumes; give a folder "
                         f"of <case>.json prompt files instead")
    return prompts


def make_segmenter(args: argparse.Namespace):
    """The :class:`~medsam_kit.infer.Segmenter` described by ``--run`` or ``--model`` / ``--checkpoint``."""
    from medsam_kit.infer.run_loading import settings_from_extra
    from medsam_kit.infer.segmenter import Segmenter
    from medsam_kit.models import load_model, read_checkpoint

    options = {"device": args.device, "batch_size": args.batch_size, "cache_bytes": args.cache_mb << 20}
    if args.run is not None:
        if args.checkpoint is not None:
            raise ValueError("--checkpoint goes with --model; a --run folder brings its own checkpoint")
        return Segmenter.from_run(args.run, **options, **({"mode": args.mode} if args.mode else {}))
    model = load_model(args.model, args.checkpoint, device=args.device)
    settings = {}
    if args.checkpoint is not None:
        checkpoint = read_checkpoint(args.checkpoint)
        if checkpoint.kind == "medsam_kit":  # trained by medsam_kit: windows at the training resolution
            settings = {"mode": "native", **settings_from_extra(checkpoint.extra)}
    if args.mode is not None:
        settings["mode"] = args.mode
    return Segmenter(model, **settings, **options)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medsam_kit.infer.output import write_result
    from medsam_kit.io import read_volume
    from medsam_kit.prompts import load_prompt_file

    cases = _inputs(args.input)
    single = len(cases) == 1 and (args.input.is_file() or cases[0] == args.input)
    if not single and _names_file(args.output):
        raise ValueError(f"--output {args.output} names a file but --input {args.input} holds {len(cases)} "
                         f"volumes; give an output folder")
    segmenter = make_segmenter(args)
    with progress_bar("predict", unit="volume") as progress:
        for n, case in enumerate(cases):
            volume = read_volume(case)
            prompt_path = _prompt_file(case, args.prompts, single)
            prompts = None
            if prompt_path is not None:
                prompts = load_prompt_file(prompt_path, volume.spatial_shape, volume.geometry, segmenter.label_names)
            result = segmenter.segment_volume(volume, prompts, return_probabilities=args.probabilities)
            out = _output_for(case, args.output, single)
            write_result(out, result, image=volume.array, probabilities=args.probabilities, overlay=args.overlay,
                         source=str(case))
            progress(n + 1, len(cases))
            print(f"{case.name}: {result.mode}, labels {[int(v) for v in np.unique(result.labels) if v]} -> {out}")
    return 0


def _names_file(path: Path) -> bool:
    """True when ``path`` ends in a volume suffix (names a file, not a folder)."""
    from medsam_kit.io import strip_volume_suffix

    return strip_volume_suffix(path.name) != path.name
