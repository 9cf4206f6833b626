"""The ``spendsentry`` command line: one sub-command per job.

Each command lives in its own module and is imported lazily, so ``--help``
stays fast and a broken optional part cannot break the others.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# name -> (module, one-line help). The module exposes ``add_arguments(parser)``
# and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "replay": ("spendsentry.commands.replay", "replay JSON Lines event files through the engine"),
    "broker": ("spendsentry.commands.broker", "run the embedded Kafka-protocol broker (Tansu)"),
    "policy": ("spendsentry.commands.policy", "validate per-use-case policy files"),
    "simulate": ("spendsentry.commands.simulate", "write labelled synthetic traffic"),
    "evaluate": ("spendsentry.commands.evaluate", "score alerts against incident labels"),
    "worker": ("spendsentry.commands.worker", "run the stream processor on Kafka"),
    "throttle": ("spendsentry.commands.throttle", "list, release or test throttle commands"),
    "demo": ("spendsentry.commands.demo", "broker, worker and simulated incidents, live"),
    "produce": ("spendsentry.commands.produce", "publish JSON Lines events to Kafka"),
    "notify": ("spendsentry.commands.notify", "post alerts from Kafka to Slack"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` where the help does not already say the default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        # Flags (no value) and options without a value by default explain themselves in
        # their text; "(default: None)" or "(default: False)" would only be noise.
        if action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
            return text
        if "default" in text.lower():
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A parser whose help, and its sub-commands' help, shows every option's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # add_subparsers() passes the parser class on, not the formatter: set it here so
        # nested actions (``policy check``, ``throttle list``) get it too.
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spendsentry",
        description="Real-time anomaly detection for AI spend.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from spendsentry import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
