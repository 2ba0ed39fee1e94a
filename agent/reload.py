"""SIGHUP: read the config file again; a valid one replaces the running one, an invalid one changes nothing.

An invalid file is logged one line per problem (the lines `check-config` prints) and the running agent
carries on with its collectors, aggregator and publisher untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from agent.config import AgentConfig, load
from agent.schema import ConfigError

log = structlog.get_logger()


class ConfigReloader:
    def __init__(self, path: Path | None, *, loader: Callable[[Path], AgentConfig] = load) -> None:
        self._path = path
        self._loader = loader
        self.pending: AgentConfig | None = None

    def request(self) -> bool:
        """Load and validate the file; True when a valid config is now pending."""
        if self._path is None:
            log.warning("reload_ignored", reason="started without --config: nothing to re-read")
            return False
        try:
            config = self._loader(self._path)
        except ConfigError as error:
            for problem in error.problems:
                log.error("config_reload_rejected", path=str(self._path), problem=problem)
            log.warning("config_unchanged", path=str(self._path), problems=len(error.problems))
            return False
        self.pending = config
        log.info("config_reload_accepted", path=str(self._path))
        return True

    def take(self) -> AgentConfig | None:
        config, self.pending = self.pending, None
        return config
