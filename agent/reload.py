"""SIGHUP: read the config file again; a valid one replaces the running one, an invalid one changes nothing.

An invalid file, or one whose collectors cannot be built (`gpu.enabled = true` without NVML), is logged one
line per problem (the lines `check-config` prints) and the running agent carries on with the same
collectors and publisher; so does any other failure while reloading, logged with its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from agent.config import AgentConfig, load
from agent.schema import ConfigError

log = structlog.get_logger()
T = TypeVar("T")


class ConfigReloader:
    def __init__(self, path: Path | None, *, loader: Callable[[Path], AgentConfig] = load) -> None:
        self._path = path
        self._loader = loader

    def reload(self, prepare: Callable[[AgentConfig], T]) -> tuple[AgentConfig, T] | None:
        """The file's config and what `prepare` builds from it (the collectors); None, with every problem
        logged, when either fails, so the running agent carries on."""
        if self._path is None:
            log.warning("reload_ignored", reason="started without --config: nothing to re-read")
            return None
        try:
            config = self._loader(self._path)
            prepared = prepare(config)
        except ConfigError as error:
            for problem in error.problems:
                log.error("config_reload_rejected", path=str(self._path), problem=problem)
            log.warning("config_unchanged", path=str(self._path), problems=len(error.problems))
            return None
        except Exception as error:  # in the running agent nothing is fatal: a reload that breaks changes nothing
            log.error("config_reload_failed", path=str(self._path), error=repr(error), exc_info=True)
            log.warning("config_unchanged", path=str(self._path), problems=1)
            return None
        log.info("config_reload_accepted", path=str(self._path))
        return config, prepared
