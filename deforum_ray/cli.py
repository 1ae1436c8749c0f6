"""Command line: ``deforum-ray <command>``. Bad input exits 2 with one line on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .schedule import ScheduleError, parse_schedule

EXIT_USAGE = 2


def _cmd_schedule(args: argparse.Namespace) -> int:
    """Print each frame's value so a schedule can be checked before any GPU time is spent."""
    values = parse_schedule(args.text, args.frames, seed=args.seed)
    width = len(str(args.frames - 1))
    out = sys.stdout
    for frame, value in enumerate(values):
        out.write(f"{frame:>{width}}  {value:.6g}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deforum-ray",
        description="Distributed batch renderer for Deforum-style FLUX.1 animations on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    schedule = commands.add_parser(
        "schedule",
        help="print a Deforum schedule's value on every frame",
        description='Preview a schedule, e.g. deforum-ray schedule "0:(1.0), 60:(1.1)" --frames 61',
    )
    schedule.add_argument("text", help='schedule string, e.g. "0:(1.0), 60:(1 + 0.1*sin(t/10))"')
    schedule.add_argument("--frames", type=_positive_int, required=True, help="number of frames")
    schedule.add_argument("--seed", type=int, default=0, help="value of s in expressions (default 0)")
    schedule.set_defaults(run=_cmd_schedule)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except ScheduleError as exc:
        print(f"deforum-ray: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `deforum-ray schedule ... | head` is fine
        return 0


if __name__ == "__main__":
    sys.exit(main())
