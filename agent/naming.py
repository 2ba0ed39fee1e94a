"""Naming profiles: how a catalogue series is named when published.

`native` publishes the catalogue's own names and dimensions. Other profiles map each catalogue entry
to another tool's names so existing dashboards and services keep working.
"""

from __future__ import annotations

from agent.catalogue import METRICS

PROFILES = ("native",)
DEFAULT_NAMESPACE = {"native": "InfraWatch"}


def resolve(profile: str, metric: str, dimensions: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(published metric name, published dimensions) of one catalogue series under `profile`."""
    if metric not in METRICS:
        raise KeyError(f"{metric} is not in the metric catalogue")
    if profile == "native":
        return metric, dict(dimensions)
    raise KeyError(f"unknown naming profile {profile!r}")
