"""``medsam-kit <verb>``: one argparse subcommand per step, each a thin front end over the library.

Each verb lives in ``medsam_kit/cli/<verb>.py`` and exposes ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int`` as the default. Errors the user can fix (bad paths,
bad data) print one line and exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from medsam_kit import __version__

VERBS = ("demo", "phantoms", "check", "prepare", "train", "predict", "evaluate", "info", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsam-kit",
        description="Medical-image segmentation with SAM-family models: data, training, inference.",
    )
    parser.add_argument("--version", action="version", version=f"medsam_kit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"medsam_kit.cli.{verb}").register(subparsers)
    return parser


def _tolerate_narrow_console() -> None:
    """Messages use a few non-ASCII signs (em dash, degree, squared); on a console whose locale cannot encode
    them (an ASCII-only locale with Python's UTF-8 mode off) they are escaped instead of crashing the verb."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and getattr(stream, "errors", "strict") == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerate_narrow_console()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    # RuntimeError: SimpleITK reports bad images (e.g. a failed resample) with it.
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"medsam-kit {args.verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
