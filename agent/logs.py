"""Logging: configured once at the entry point; JSON lines for journald, key=value on a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Hashable
from typing import Any, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """JSON when the stream is not a terminal (systemd, pipes), key=value when a person is watching.

    `stream` defaults to stdout (journald); a command whose stdout is its output logs to stderr.
    """
    stream = stream if stream is not None else sys.stdout
    if json is None:
        json = not stream.isatty()
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        # One write per line (PrintLogger writes the line and its newline separately), so a line never
        # interleaves with --dry-run's requests, which the publish thread writes to the same stdout.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


class LogOnce:
    """Log a recurring condition once, not every cycle; `reset` re-arms it when it clears.

    `key` names the condition (a collector failing, a mount hung) and is all that `reset` takes, so a
    condition that clears is always re-armed. `variant` (an error type) lets a condition whose cause
    changes say so once more while it lasts; it is not part of the key.
    """

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._seen: dict[Hashable, set[Hashable]] = {}

    def warning(self, key: Hashable, event: str, *, variant: Hashable = None, **context: Any) -> None:
        if self._first(key, variant):
            self._logger.warning(event, **context)

    def info(self, key: Hashable, event: str, *, variant: Hashable = None, **context: Any) -> None:
        """For a lasting fact worth saying once (a GPU without a sensor), not a problem."""
        if self._first(key, variant):
            self._logger.info(event, **context)

    def reset(self, key: Hashable) -> None:
        if self._seen:  # called on every success, so the common case is one truth test
            self._seen.pop(key, None)

    def _first(self, key: Hashable, variant: Hashable) -> bool:
        variants = self._seen.setdefault(key, set())
        if variant in variants:
            return False
        variants.add(variant)
        return True
