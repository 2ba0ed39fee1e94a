"""What both commands (`infrawatch-agent`, `provision-alarms`) share on their command line: `--version`,
and usage errors that say what to do next."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import Any, NoReturn

DISTRIBUTION = "infrawatch"
EXIT_USAGE = 2  # argparse's own, and the exit code of an invalid config or spec


def version() -> str:
    """The installed distribution's version: pyproject.toml is its one source."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser with `--version`, whose errors end with a command that works (`example`) and a
    pointer to `--help`, instead of argparse's bare "error:" line."""

    def __init__(self, *, example: str, with_version: bool = True, **kwargs: Any) -> None:
        """`with_version`: false for a subcommand's parser; the command's own has `--version`."""
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        self.example = example
        self.commands: dict[str, CommandParser] = {}  # subcommands whose own errors the caller raises
        if with_version:
            self.add_argument("--version", action="version", version=f"%(prog)s {version()}")

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n"
                              f"For example: {self.example}\n"
                              f"See every option: {self.prog} --help\n")
