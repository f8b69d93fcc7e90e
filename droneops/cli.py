"""The ``droneops`` command line.

One sub-command per job; each ``_add_<name>`` function below declares its options and
points at a handler ``_cmd_<name>(args) -> int``. Handlers raise
:class:`droneops.errors.UserError` for bad input: :func:`main` prints it as one clear
line on stderr and exits 2, never with a traceback.

Exit codes: 0 success, 2 bad input, 3 infeasible (``plan``), 1 anything else that failed.
"""

from __future__ import annotations

import argparse
import sys

from droneops import __version__
from droneops.errors import UserError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line for bad options (argparse's own convention)."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="droneops",
        description=(
            "Plan energy-safe drone deliveries over a village network and fly them through "
            "PX4. Start with 'droneops network check missions/huadu.geojson' and "
            "'droneops plan --help'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"droneops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_energy, _add_network, _add_plan):
        add(sub)
    return parser


# --- energy -------------------------------------------------------------------------------


def _add_energy(sub: argparse._SubParsersAction) -> None:
    pass


# --- network ------------------------------------------------------------------------------


def _add_network(sub: argparse._SubParsersAction) -> None:
    pass


# --- plan ---------------------------------------------------------------------------------


def _add_plan(sub: argparse._SubParsersAction) -> None:
    pass


# --- entry point --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"droneops {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
