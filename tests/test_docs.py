"""The README's reference tables are generated from the code, and must not drift from it."""

from __future__ import annotations

from agent.catalogue import CATALOGUE
from agent.config import AgentConfig
from agent.docs import README, regenerate
from agent.schema import describe


def test_readme_generated_blocks_match_the_code() -> None:
    text = README.read_text()
    assert regenerate(text) == text, "README is stale: run `.venv/bin/python -m agent.docs`"


def test_every_config_key_and_every_metric_appears_in_the_readme() -> None:
    text = README.read_text()
    missing_keys = [path for path, *_ in describe(AgentConfig) if f"`{path}`" not in text]
    missing_metrics = [metric.name for metric in CATALOGUE if f"`{metric.name}`" not in text]
    assert (missing_keys, missing_metrics) == ([], [])
