"""The ``droneops`` command line: builds the parser and dispatches to one module per sub-command.

Each sub-command lives in ``droneops.cli.<name>`` with ``register(sub)`` (declares its options
and sets ``handler=run``) and ``run(args) -> int``. Handlers raise
:class:`droneops.errors.UserError` for bad input: :func:`main` prints it as one clear line on
stderr and exits 2, never with a traceback. Bad options and arguments are one line too
(:class:`OneLineErrorParser`), with a pointer to the sub-command's ``--help``.

Exit codes (:mod:`droneops.cli.common`): 0 success, 2 bad input, 3 infeasible (``plan``,
``fly``), 1 anything else that failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from droneops import __version__
from droneops.cli import calibrate, dashboard, demo, energy, fly, mission, network, plan, serve, sim
from droneops.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INFEASIBLE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OneLineErrorParser,
)
from droneops.errors import UserError

#: The sub-command modules, in the order ``droneops --help`` lists them.
SUBCOMMANDS = (energy, network, plan, mission, fly, dashboard, sim, serve, demo, calibrate)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INFEASIBLE", "EXIT_OK", "SUBCOMMANDS", "OneLineErrorParser",
           "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="droneops",
        description=(
            "Plan energy-safe drone deliveries over a village network and fly them through "
            "PX4. New here? 'droneops demo' runs the whole system on this machine; then try "
            "'droneops plan --network missions/huadu.geojson --vehicle quad7 --from depot "
            "--to P01' and 'droneops COMMAND --help'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"droneops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    for command_parser in sub.choices.values():   # whose --help an unknown option points to
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:     # reported by the (sub-)command given, pointing to its --help
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
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
        return EXIT_INTERRUPTED
    except BrokenPipeError:      # stdout piped into e.g. head, which stopped reading
        _silence_stdout()
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
