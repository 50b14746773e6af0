"""``medsam-kit predict``: segment volumes (prompted or automatic) and write them on the input's grid.

Three kinds of ``--input``:

* one file, or a folder of volume files, each file one volume (a 4D file is ``(C, Z, Y, X)``);
* several files (``--input A B`` or ``--input A --input B``): the channels of ONE volume, in the
  model's channel order, all on one grid;
* a raw dataset root with ``--dataset NAME`` (automatic for a run whose plan has several channels
  when the folder holds case folders, not volume files): the dataset adapter finds the cases and
  each case's channels are stacked in the plan's channel order.

Before anything is segmented, every file the run would write (labels, sidecar, probability maps,
overlay, and the data file of an MHD / NHDR header) is checked: one that is a file predict reads
(inputs and an MHD / NHDR input's data file, prompt files, the checkpoint or run folder) stops the
run whatever the options; one that already exists stops a single volume and skips that case of a
batch, unless ``--overwrite``. A stopped batch therefore resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from medsam_kit.cli._progress import progress_bar

_EPILOG = """\
inputs and outputs:
  --input FILE   one volume (NIfTI, NRRD, MHA, TIFF, HDF5, or a DICOM / slice folder);
                 --output is the label file (OUT.nii.gz) or a folder (gets <case>.nii.gz).
  --input DIR    every volume file directly in DIR (batch, with a progress bar); --output
                 is a folder. A DIR holding no volume files is read as one volume (DICOM).
  --input A B C  (or --input A --input B ...) the channels of ONE volume, in the model's
                 channel order (e.g. BraTS t1n t1c t2w t2f), all on one grid; the case name
                 is the files' common prefix (case-t1n, case-t1c -> case).
  --input ROOT --dataset NAME
                 a raw dataset root (brats, brats2021, nnunet, acdc, bhsd, em layouts): the
                 cases are found as training finds them, each case's channels are stacked in
                 the model's channel order, --output gets <case_id>.nii.gz per case. Cases
                 without labels are fine; cases the adapter rejects (a missing modality) are
                 listed and skipped (exit code 1). When the model's plan (--run, or a medsam_kit
                 --checkpoint) has several channels, a ROOT holding no volume files is read
                 as a root of the plan's dataset without --dataset.
  The number of channels must be the model's: the run's plan, or --in-channels for --model.
  Next to each label file: <case>.json (label values and names, mode, geometry),
  with --probabilities <case>_prob_<name>.nii.gz, with --overlay <case>_overlay.png.
  Labels are on the input's grid with its spacing / origin / direction.

existing files:
  predict never writes onto a file it reads (an input or the data file of an .mhd / .nhdr input,
  a prompt file, the checkpoint or a --run file): it stops before segmenting anything, even with
  --overwrite. An existing output is replaced only with --overwrite; without it one volume stops
  with an error and a batch (folder or dataset root) skips the cases whose outputs exist
  ("skipped N existing outputs"), so running a stopped batch again finishes it.

prompts:
  without --prompts every volume is segmented automatically (coarse head -> PCSW prompts
  -> decoder -> propagation -> --refine: by default the coarse labels, improved by the decoder
  where the two agree). --prompts FILE is a medsam-kit prompt file (see
  medsam_kit.prompts.user_file) for a single input; --prompts DIR holds <case>.json per
  input volume (volumes without one are segmented automatically).

examples:
  medsam-kit predict --run runs/brats --input BraTS/ --output pred/
  medsam-kit predict --run runs/brats --input c-t1n.nii.gz c-t1c.nii.gz c-t2w.nii.gz c-t2f.nii.gz --output c.nii.gz
  medsam-kit predict --model sam2.1_hiera_tiny --checkpoint sam2.1_hiera_tiny.pt --in-channels 4 \
      --input BraTS/ --dataset brats --output pred/
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment volumes with a trained run or a model checkpoint (prompted or automatic)",
        description="Segment one volume, a folder of volumes or a raw dataset root slice by slice with a\n"
                    "SAM-family model: from prompts (boxes / points on some slices, propagated through the\n"
                    "volume) or automatically; write labels with the input's geometry and a JSON sidecar.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--input", required=True, type=Path, nargs="+", action="extend",
                        help="volume file, folder of volume files, or dataset root (with --dataset); several "
                             "files (or --input repeated) are the channels of one volume, in the model's order")
    parser.add_argument("--dataset", default=None,
                        help="read --input as a raw dataset root of this layout (brats, brats2021, nnunet, acdc, "
                             "bhsd, em) and segment every case; default: the run's plan's dataset when it has "
                             "several channels and --input holds no volume files")
    parser.add_argument("--output", required=True, type=Path,
                        help="label file (e.g. out.nii.gz) for one input, or an output folder")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="prompt JSON file (one input) or folder of <case>.json; default: automatic mode")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--overlay", action="store_true", help="also write a PNG montage of labelled slices")
    parser.add_argument("--probabilities", action="store_true", help="also write per-class probability maps")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (default: a single volume stops with an error, a batch "
                             "skips the cases already written); never allows writing onto an input")
    parser.set_defaults(func=run)


@dataclass
class _Job:
    """One volume to segment: ``name`` names its output / prompt files, ``label`` the progress line,
    ``files`` the files (or DICOM / slice folders) it reads."""

    name: str
    label: str
    source: str
    load: Callable[[], object]  # -> medsam_kit.io.Volume
    files: tuple[Path, ...] = ()


def _volume_files(path: Path) -> list[Path]:
    from medsam_kit.io import VOLUME_SUFFIXES

    return sorted(p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()
                  and p.name.lower().endswith(VOLUME_SUFFIXES))


def _inputs(path: Path) -> list[Path]:
    if not path.exists():
        raise FileNotFoundError(f"--input {path} does not exist; give a volume file or a folder of volumes")
    if path.is_file():
        return [path]
    return _volume_files(path) or [path]  # no volume files: the folder itself is one volume (DICOM / slices)


def _output_for(name: str, output: Path, single: bool) -> Path:
    if single and _names_file(output):
        return output
    return output / f"{name}.nii.gz"


def _prompt_file(name: str, prompts: Path | None, single: bool) -> Path | None:
    if prompts is None:
        return None
    if prompts.is_dir():
        candidate = prompts / f"{name}.json"
        return candidate if candidate.exists() else None
    if not prompts.exists():
        raise FileNotFoundError(f"--prompts {prompts} does not exist")
    if not single:
        raise ValueError(f"--prompts {prompts} is one file but --input holds several volumes; give a folder "
                         f"of <case>.json prompt files instead")
    return prompts


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`make_segmenter` reads: the model source (--run | --model [--checkpoint]
    [--in-channels]) and how it segments (--batch-size, --mode, --propagation, --guide, --refine, --cache-mb).
    Shared by ``predict`` and ``serve``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="training run folder (model, plan, label names from it)")
    source.add_argument("--model", help="registry model name (see medsam_kit.models.list_models); random "
                                        "weights unless --checkpoint is given")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint for --model (official SAM / SAM-2 / MedSAM file or a medsam_kit one)")
    parser.add_argument("--in-channels", type=int, default=None,
                        help="input channels of the --model (default 3, SAM's RGB; e.g. 4 for BraTS); a "
                             "medsam_kit checkpoint must store the same number")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per encoder call (default 8)")
    parser.add_argument("--mode", choices=("longest", "native"), default=None,
                        help="how slices meet the model input: 'longest' resizes whole slices (SAM style, default "
                             "for official weights), 'native' uses windows at the training resolution (default "
                             "for --run and medsam_kit checkpoints)")
    parser.add_argument("--propagation", choices=("auto", "box", "memory"), default="auto",
                        help="how an object is followed from its prompted slice(s): 'box' (any model) decodes the "
                             "next slice from the previous mask's box; 'memory' uses SAM-2 memory attention "
                             "(SAM-2 models with trained memory: official SAM-2.1, MedSAM2); 'auto' (default) = "
                             "memory for official SAM-2 checkpoints, box otherwise (medsam_kit runs do not train "
                             "the memory modules)")
    parser.add_argument("--guide", choices=("auto", "coarse", "none"), default="auto",
                        help="box propagation guided by the model's coarse head (the next box from its region "
                             "of the label; the object ends where it sees none): 'auto' (default) = on for "
                             "--run and medsam_kit checkpoints, whose coarse head is trained, off otherwise")
    parser.add_argument("--refine", choices=("auto", "decoder", "none"), default="auto",
                        help="automatic mode: 'auto' (default) = the coarse head's labels, improved by the mask "
                             "decoder where the two agree (never measured below the coarse head alone); "
                             "'decoder' = the decoder's propagated masks alone; 'none' = the coarse head alone, "
                             "the fastest path (no decoder work)")
    parser.add_argument("--cache-mb", type=int, default=1024,
                        help="bound of the slice-embedding cache in MiB (default 1024)")


def make_segmenter(args: argparse.Namespace):
    """The :class:`~medsam_kit.infer.Segmenter` described by ``--run`` or ``--model`` / ``--checkpoint``."""
    from medsam_kit.infer.run_loading import settings_from_extra
    from medsam_kit.infer.segmenter import Segmenter
    from medsam_kit.infer.volume import PropagationOptions
    from medsam_kit.models import load_model, read_checkpoint

    options = {"device": args.device, "batch_size": args.batch_size, "cache_bytes": args.cache_mb << 20,
               "refine": getattr(args, "refine", "auto")}
    in_channels = getattr(args, "in_channels", None)

    def propagation(trained_head: bool, trained_memory: bool = False) -> PropagationOptions:
        guide = getattr(args, "guide", "auto")
        guide = ("coarse" if trained_head else "none") if guide == "auto" else guide
        method = getattr(args, "propagation", "auto")
        method = ("memory" if trained_memory else "box") if method == "auto" else method
        return PropagationOptions(guide=guide, method=method)

    if args.run is not None:
        if args.checkpoint is not None:
            raise ValueError("--checkpoint goes with --model; a --run folder brings its own checkpoint")
        if in_channels is not None:
            raise ValueError("--in-channels goes with --model; a --run folder's model has its own channels")
        return Segmenter.from_run(args.run, **options, propagation=propagation(True),
                                  **({"mode": args.mode} if args.mode else {}))
    if in_channels is not None and in_channels < 1:
        raise ValueError(f"--in-channels must be at least 1, got {in_channels}")
    checkpoint = read_checkpoint(args.checkpoint) if args.checkpoint is not None else None  # read once
    model = load_model(args.model, checkpoint, in_channels=in_channels, device=args.device)
    # official SAM-2.1 / MedSAM2 weights (the only ones loaded with SAM-2's own post-processing on)
    # carry trained memory attention; random init and medsam_kit runs do not
    official_sam2 = model.family == "sam2" and bool(model.config.get("decoder_postprocessing"))
    settings = {"propagation": propagation(False, official_sam2)}
    if checkpoint is not None and checkpoint.kind == "medsam_kit":  # windows at the training resolution
        settings = {"mode": "native", "propagation": propagation(True), **settings_from_extra(checkpoint.extra)}
    if args.mode is not None:
        settings["mode"] = args.mode
    return Segmenter(model, **settings, **options)


# ---------------------------------------------------------------------------- channels
def _check_channel_count(count: int, segmenter, what: str) -> None:
    """Raise ``ValueError`` (one line) unless ``count`` channels fit the model (one grey channel always does
    without a plan: it is repeated into the model's channels, SAM's convention)."""
    if count in segmenter.accepted_channel_counts:
        return
    plan = segmenter.plan
    if plan is not None:
        raise ValueError(f"{what}: {count} channel(s) but the model's plan expects {len(plan.channel_names)} "
                         f"{list(plan.channel_names)}, in that order")
    wanted = int(segmenter.model.in_channels)
    raise ValueError(f"{what}: {count} channel(s) but the model takes {wanted}; give {wanted} or load the "
                     f"model with --in-channels {count}")


def _channel_order(names: Sequence[str], segmenter, what: str) -> list[int]:
    """Indices that put channels ``names`` in the plan's channel order (identity without a plan)."""
    plan = segmenter.plan
    if plan is not None and tuple(names) != tuple(plan.channel_names):
        wanted = list(plan.channel_names)
        if sorted(names) != sorted(wanted) or len(set(names)) != len(names):
            raise ValueError(f"{what}: channels {list(names)} but the model's plan expects {wanted}; give each "
                             f"case's channel files with --input FILE FILE ... in that order")
        return [list(names).index(n) for n in wanted]
    _check_channel_count(len(names), segmenter, what)
    return list(range(len(names)))


def _common_name(paths: Sequence[Path]) -> str:
    """Case name of channel files: their common prefix up to its last '-', '_' or '.' (else the first stem)."""
    from medsam_kit.io import strip_volume_suffix

    stems = [strip_volume_suffix(p.name) for p in paths]
    prefix = os.path.commonprefix(stems)
    if prefix == stems[0]:
        return prefix
    cut = max(prefix.rfind(c) for c in "-_.")
    return prefix[:cut].rstrip("-_. ") if cut > 0 else stems[0]


def _stack_channels(paths: Sequence[Path]):
    """One ``(C, Z, Y, X)`` :class:`Volume` from single-channel files on one grid (the first file's geometry)."""
    import numpy as np

    from medsam_kit.io import Volume, read_volume

    arrays, first = [], None
    for path in paths:
        volume = read_volume(path)
        array = volume.array[0] if volume.array.ndim == 4 and volume.array.shape[0] == 1 else volume.array
        if array.ndim != 3:
            raise ValueError(f"--input {path}: holds {volume.array.shape[0]} channels (shape {volume.array.shape}); "
                             f"with several --input files each must be one (Z, Y, X) channel")
        if first is None:
            first = volume
        elif array.shape != first.spatial_shape:
            raise ValueError(f"--input {path}: grid (Z, Y, X) {array.shape} differs from {paths[0]} "
                             f"{first.spatial_shape}; the channels of one volume must share its grid")
        elif volume.meta.get("stored_geometry", True) and first.meta.get("stored_geometry", True):
            difference = volume.geometry.describe_difference(first.geometry)
            if difference:
                raise ValueError(f"--input {path}: geometry differs from {paths[0]} ({difference}); the channels "
                                 f"of one volume must share its grid (resample one onto the other)")
        arrays.append(array)
    if len({a.dtype for a in arrays}) > 1:
        arrays = [a.astype(np.float32) for a in arrays]
    return Volume(np.stack(arrays), first.geometry, dict(first.meta))


def _channel_job(paths: list[Path], segmenter) -> _Job:
    _check_channel_count(len(paths), segmenter, f"--input ({len(paths)} files)")
    name = _common_name(paths)
    return _Job(name, name, ", ".join(str(p) for p in paths), lambda: _stack_channels(paths), tuple(paths))


# ---------------------------------------------------------------------------- dataset roots
def _auto_dataset(path: Path, segmenter) -> str | None:
    """The plan's dataset when the model takes several channels and ``path`` is a folder of case folders."""
    from medsam_kit.data.adapters import get_adapter, list_datasets

    plan = segmenter.plan
    if plan is None or len(plan.channel_names) < 2 or not path.is_dir() or _volume_files(path):
        return None
    try:
        get_adapter(plan.dataset)
    except ValueError:
        raise ValueError(f"--input {path} holds no volume files and the model takes {len(plan.channel_names)} "
                         f"channels {list(plan.channel_names)}; give --dataset ({', '.join(list_datasets())}) "
                         f"for a raw dataset root, or one case's channel files with --input FILE FILE ...") from None
    return plan.dataset


def _load_case(record, order: list[int]):
    from medsam_kit.io import Volume

    case = replace(record, label_file=None).load()  # prediction reads only the images: labels may be absent
    image = case.image if order == list(range(len(order))) else case.image[order]
    return Volume(image, case.geometry, {"case_id": case.case_id})


def _dataset_jobs(root: Path, name: str, segmenter) -> tuple[list[_Job], list]:
    """One job per case of the raw dataset ``root`` and the problems of the cases left out."""
    from medsam_kit.data.adapters import get_adapter

    if not root.is_dir():
        raise ValueError(f"--dataset {name} reads --input as a dataset root folder, but {root} is not a folder")
    adapter = get_adapter(name)
    problems: list = []  # non-strict: a bad case is listed and skipped, the others are segmented
    records = adapter.discover(root, problems)
    if not records:
        detail = f" ({problems[0].message})" if problems else ""
        raise FileNotFoundError(f"--input {root}: no usable {name} cases{detail}")
    order = _channel_order(adapter.spec(root).channel_names, segmenter, f"{name} cases in {root}")
    jobs = [_Job(r.case_id, r.case_id, ", ".join(str(f) for f in r.image_files), lambda r=r: _load_case(r, order),
                 (*map(Path, r.image_files), *([Path(r.label_file)] if r.label_file else []))) for r in records]
    return jobs, problems


def _jobs(args: argparse.Namespace, segmenter) -> tuple[list[_Job], bool, list]:
    """``(jobs, single, problems)``: what to segment, whether ``--output`` may name one file, skipped cases."""
    from medsam_kit.io import read_volume, strip_volume_suffix

    paths = list(args.input)
    if len(paths) > 1:
        return [_channel_job(paths, segmenter)], True, []
    path = paths[0]
    dataset = args.dataset or _auto_dataset(path, segmenter)
    if dataset is not None:
        jobs, problems = _dataset_jobs(path, dataset, segmenter)
        return jobs, len(jobs) == 1, problems
    cases = _inputs(path)
    single = len(cases) == 1 and (path.is_file() or cases[0] == path)
    jobs = [_Job(strip_volume_suffix(c.name), c.name, str(c), lambda c=c: read_volume(c), (c,)) for c in cases]
    return jobs, single, []


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from medsam_kit.infer.output import write_result
    from medsam_kit.io import check_intensities
    from medsam_kit.prompts import load_prompt_file

    if args.dataset is not None and len(args.input) != 1:
        raise ValueError(f"--dataset {args.dataset} takes one --input, the dataset root; got {len(args.input)} paths")
    for n, path in enumerate(args.input):  # before the model loads: a typo fails at once
        if not path.exists():
            which = f" (channel {n + 1} of {len(args.input)})" if len(args.input) > 1 else ""
            raise FileNotFoundError(f"--input {path} does not exist{which}; give a volume file, a folder of "
                                    f"volumes, a dataset root or one file per channel")
    segmenter = make_segmenter(args)
    jobs, single, problems = _jobs(args, segmenter)
    if not single and _names_file(args.output):
        raise ValueError(f"--output {args.output} names a file but --input holds {len(jobs)} volumes; give an "
                         f"output folder")
    if args.prompts is not None and args.prompts.is_file() and not single:
        _prompt_file(jobs[0].name, args.prompts, single)  # raises: one prompt file for several volumes
    outputs = _check_outputs(args, jobs, single, segmenter)
    todo = [job for job in jobs if job.name not in outputs.existing]
    if outputs.existing:
        count = len(outputs.existing)
        print(f"medsam-kit predict: skipped {count} existing output{'s' if count != 1 else ''} (use --overwrite "
              f"to redo {'them' if count != 1 else 'it'})", file=sys.stderr)
    with progress_bar("predict", unit="volume") as progress:
        for n, job in enumerate(todo):
            volume = job.load()
            check_intensities(volume.array, job.source)  # NaN / Inf refused with the file's name
            prompt_path = _prompt_file(job.name, args.prompts, single)
            prompts = None
            if prompt_path is not None:
                prompts = load_prompt_file(prompt_path, volume.spatial_shape, volume.geometry, segmenter.label_names)
            result = segmenter.segment_volume(volume, prompts, return_probabilities=args.probabilities)
            out = outputs.labels[job.name]
            write_result(out, result, image=volume.array, probabilities=args.probabilities, overlay=args.overlay,
                         source=job.source)
            progress(n + 1, len(todo))
            print(f"{job.label}: {result.mode}, labels {[int(v) for v in np.unique(result.labels) if v]} -> {out}")
    for problem in problems:
        print(f"medsam-kit predict: skipped {problem.case_id or problem.file}: {problem.message}", file=sys.stderr)
    return 1 if problems else 0


# ---------------------------------------------------------------------------- what is read, what is written
# The data file SimpleITK gives a detached header it writes, compressed or not (medsam_kit.io.write_volume).
_WRITTEN_DATA_SUFFIXES = {".mhd": (".raw", ".zraw"), ".nhdr": (".raw", ".raw.gz")}


def _header_data_files(header: Path) -> list[Path]:
    """The data files a MetaImage (``ElementDataFile = x.zraw``) or NRRD (``data file: x.raw.gz``) header
    names, file lists and patterns expanded (:func:`medsam_kit.io.headers.data_file_paths`); [] for others."""
    from medsam_kit.io.headers import data_file_paths

    if not header.name.lower().endswith((".mhd", ".mha", ".nhdr", ".nrrd")):
        return []
    try:
        return data_file_paths(header)  # parsed as the readers split lines
    except (OSError, ValueError):
        return []


def _read_files(args: argparse.Namespace, jobs: Sequence[_Job]) -> dict[tuple[int, int], tuple[Path, str]]:
    """``(device, inode) -> (path, option)`` of every existing file predict reads: each job's inputs (a
    folder's files, a header's data file), prompt files, the checkpoint, the run folder's files."""
    from medsam_kit.engine.run import CHECKPOINTS

    sources: list[tuple[Path, str]] = [(path, "--input") for job in jobs for path in job.files]
    sources += [(path, "--input") for path in args.input]
    if args.prompts is not None:
        sources.append((args.prompts, "--prompts"))
    if getattr(args, "checkpoint", None) is not None:
        sources.append((args.checkpoint, "--checkpoint"))
    if getattr(args, "run", None) is not None:
        sources += [(args.run, "--run"), (args.run / CHECKPOINTS, "--run")]
    read: dict[tuple[int, int], tuple[Path, str]] = {}
    for path, option in sources:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in [*files, *(data for f in files for data in _header_data_files(f))]:
            try:
                stat = file.stat()
            except OSError:
                continue
            read.setdefault((stat.st_dev, stat.st_ino), (file, option))
    return read


def _written_files(label_file: Path, args: argparse.Namespace, segmenter) -> list[Path]:
    """Every file :func:`~medsam_kit.infer.output.write_result` writes for ``label_file``, data files included."""
    from medsam_kit.infer.output import result_files

    classes = [v for v in segmenter.label_names if v != 0] if args.probabilities else ()
    files = list(result_files(label_file, segmenter.label_names, probabilities=classes,
                              overlay=args.overlay).values())
    for file in list(files):
        for header, data_suffixes in _WRITTEN_DATA_SUFFIXES.items():
            if file.name.lower().endswith(header):
                files += [file.with_name(file.name[:-len(header)] + suffix) for suffix in data_suffixes]
    return files


@dataclass
class _Outputs:
    labels: dict[str, Path]  # job name -> label file
    existing: set[str]  # names of the jobs (of a batch) skipped because their outputs exist


def _check_outputs(args: argparse.Namespace, jobs: Sequence[_Job], single: bool, segmenter) -> _Outputs:
    """Where each job writes; raise (before anything is segmented) when a file it would write is one predict
    reads, when two jobs would write one file, or when a single volume's output exists without --overwrite."""
    read = _read_files(args, jobs)
    labels: dict[str, Path] = {}
    writers: dict[Path, _Job] = {}
    existing: set[str] = set()
    for job in jobs:
        label_file = _output_for(job.name, args.output, single)
        if label_file in writers:
            raise ValueError(f"{writers[label_file].source} and {job.source} would both write {label_file}; "
                             f"rename one or segment them into different --output folders")
        writers[label_file] = job
        labels[job.name] = label_file
        found = []
        for file in _written_files(label_file, args, segmenter):
            try:
                stat = file.stat()
            except FileNotFoundError:
                if os.path.lexists(file):  # a dangling link is an existing name all the same
                    found.append(file)
                continue
            except NotADirectoryError:
                raise ValueError(f"--output {args.output}: cannot write {file}, a file stands where its folder "
                                 f"should be; give an output folder, or a label file name ending in .nii.gz") from None
            if (stat.st_dev, stat.st_ino) in read:
                source, option = read[(stat.st_dev, stat.st_ino)]
                raise ValueError(f"--output {args.output} would overwrite the input {source} ({option}) by writing "
                                 f"{file}; choose another --output")
            found.append(file)
        if found and not args.overwrite:
            if single:
                what = f"--output {label_file} already exists" if found[0] == label_file else \
                    f"{found[0]} already exists (written with --output {label_file})"
                raise FileExistsError(f"{what}; pass --overwrite to replace it, or choose another --output")
            existing.add(job.name)
    return _Outputs(labels, existing)


def _names_file(path: Path) -> bool:
    """True when ``path`` ends in a volume suffix (names a file, not a folder)."""
    from medsam_kit.io import strip_volume_suffix

    return strip_volume_suffix(path.name) != path.name
