"""docs/provisioning.md's tables and example are generated from the code and must not drift from it."""

from __future__ import annotations

from agent.docs import ROOT
from provisioning.alarm_catalogue import KINDS
from provisioning.docs import regenerate
from provisioning.spec import reference

PROVISIONING = ROOT / "docs" / "provisioning.md"


def test_provisioning_blocks_match_the_code() -> None:
    text = PROVISIONING.read_text()
    assert regenerate(text) == text, "docs/provisioning.md is stale: run `make docs`"


def test_every_spec_key_and_every_alarm_appears_in_the_provisioning_reference() -> None:
    text = PROVISIONING.read_text()
    missing_keys = [path for path, *_ in reference() if f"`{path}`" not in text]
    missing_alarms = [key for key in KINDS if f"`{key}`" not in text]
    assert (missing_keys, missing_alarms) == ([], [])
