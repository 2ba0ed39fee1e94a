"""The exact series a host publishes for a catalogue metric under the spec's naming profile.

Alarms, dashboards and discovery all name a host's series here, so they agree with the agent and with each
other. The dimension keys are the agent's: the metric's catalogue dimensions, plus the optional ones the
naming profile makes the collectors set (`agent.naming.Profile.series_dimensions`, e.g. a mount's `Device`
and `FSType`, a GPU's `GPUName` and `GPUArch` under cwagent), published under the profile's names
(`agent.naming.resolve`).
Those optional values (a block device, a GPU model) are known only to the host: discovery reads them from
the series the host publishes and keeps them on the `Host`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agent.catalogue import METRICS
from agent.naming import profile, resolve

if TYPE_CHECKING:  # discovery reads `device_keys` to know what to look up
    from provisioning.discovery import Host

Dimensions = tuple[tuple[str, str], ...]


def device_keys(profile_name: str, metric: str) -> tuple[str, ...]:
    """The optional catalogue dimensions the agent sets on `metric` under this profile, in catalogue order."""
    own = METRICS[metric].dimensions
    return tuple(name for name in profile(profile_name).series_dimensions(metric) if name not in own)


def published(
    profile_name: str, namespace: str, host: Host, metric: str, series: Mapping[str, str]
) -> tuple[str, str, Dimensions]:
    """(namespace, published name, published dimensions) of one series of `metric` on `host`; `series` holds
    the per-series catalogue dimensions (`{"GPU": "3"}`, `{"MountPath": "/"}`, `{"Component": "agent"}`)."""
    own = dict(series)
    keys = device_keys(profile_name, metric)
    if keys:
        # Discovery keeps only devices whose series it read, so their values are known here.
        known = dict(host.devices[next(iter(series.items()))])
        own.update({key: known[key] for key in keys})
    sample = METRICS[metric].sample(0.0, **own)  # the catalogue checks the dimension set
    dims = {host.id_dimension: host.instance_id, **dict(host.dimensions), **dict(sample.dimensions)}
    name, names = resolve(profile_name, metric, dims)
    return namespace, name, tuple(sorted(names.items()))
