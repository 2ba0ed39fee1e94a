"""The reference tables in README.md and docs/ are generated from the code, and must not drift from it."""

from __future__ import annotations

import pytest

from agent.catalogue import CATALOGUE
from agent.config import AgentConfig
from agent.docs import ROOT, documents, regenerate
from agent.schema import describe


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_generated_blocks_match_the_code(document) -> None:
    text = document.read_text()
    assert regenerate(text) == text, f"{document.name} is stale: run `make docs`"


def test_every_config_key_is_in_the_configuration_reference() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    assert [path for path, *_ in describe(AgentConfig) if f"`{path}`" not in text] == []


def test_every_metric_is_in_the_metric_catalogue() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert [metric.name for metric in CATALOGUE if f"`{metric.name}`" not in text] == []


def test_each_generated_block_stands_in_exactly_one_document() -> None:
    from agent.docs import BLOCKS as AGENT_BLOCKS
    from provisioning.docs import BLOCKS as PROVISIONING_BLOCKS

    names = [*AGENT_BLOCKS, *PROVISIONING_BLOCKS, "performance"]
    places = {name: [d.name for d in documents() if f"<!-- BEGIN generated: {name} -->" in d.read_text()]
              for name in names}
    assert places == {
        "metrics": ["metrics.md"], "config": ["configuration.md"], "naming": ["naming.md"],
        "cwagent-metrics": ["cwagent.md"],
        "provisioning-spec": ["provisioning.md"], "provisioning-alarms": ["provisioning.md"],
        "provisioning-example": ["provisioning.md"], "performance": ["performance.md"],
    }
