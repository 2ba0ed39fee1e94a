"""Turns the spec's host groups and endpoints into concrete hosts and endpoint variants, reading AWS only.

Hosts come from instance ids, Auto Scaling groups, or the agents' own Heartbeat series (ListMetrics);
their GPU indexes and mount paths from the spec or from the series they publish. Endpoint variants and
instance types come from the spec or from SageMaker; vCPU and GPU counts from EC2's instance type data.
Something the spec names that does not exist is a spec problem (exit 2), found before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import ClientError

from agent.config import HOST_DIMENSION
from agent.fleet import HOST as HOSTNAME_DIMENSION
from agent.naming import resolve
from agent.schema import ConfigError, render
from provisioning.aws import Caller
from provisioning.series import device_keys
from provisioning.spec import Endpoint, HostGroup, Spec, ThroughputFloor

log = structlog.get_logger()

Dimensions = tuple[tuple[str, str], ...]

RECENTLY_ACTIVE = "PT3H"  # the only window ListMetrics offers: series with data in the last 3 hours
AGENT_COMPONENT = {"Component": "agent"}
# The series a host's GPU indexes and mount paths (and their device dimensions) are read from.
GPU_SERIES = ("GPUHealthy", "GPU")
STORAGE_SERIES = ("StorageUtilization", "MountPath")
_SENTINEL = "\x00"
INVALID_INSTANCE_TYPE = ("InvalidInstanceType", "InvalidParameterValue")


@dataclass(frozen=True)
class Host:
    instance_id: str
    dimensions: Dimensions  # the agent's static dimensions, carried by every series
    gpus: tuple[str, ...]  # GPU index values
    mounts: tuple[str, ...]
    throughput_floors: tuple[ThroughputFloor, ...] = ()
    # `InstanceId` on EC2; an agent that found no instance metadata publishes its hostname as `Host`.
    id_dimension: str = HOST_DIMENSION
    auto_scaling_group: str = ""  # the spec's group this host was found in; "" when listed otherwise
    # The device dimensions the naming profile adds (`series.device_keys`), read from the host's own series:
    # {("GPU", "0"): (("GPUName", "NVIDIA H100 80GB HBM3"),), ("MountPath", "/"): (("Device", ...), ...)}.
    devices: Mapping[tuple[str, str], Dimensions] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    endpoint: str
    name: str
    instance_type: str  # "" for serverless variants, which have no instance metrics
    vcpus: int = 0
    gpus: int = 0


@dataclass(frozen=True)
class Inventory:
    hosts: tuple[Host, ...]
    variants: tuple[Variant, ...]
    empty_groups: tuple[str, ...] = ()  # host groups that resolved to no host, e.g. "hosts[0] (discover = true)"
    warnings: tuple[str, ...] = ()  # what the alarms leave out, and why

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(variant.endpoint for variant in self.variants))


def published_key(profile: str, metric: str, dimension: str, others: dict[str, str]) -> str:
    """The name `dimension` is published under in `profile` (a profile may rename dimensions)."""
    _, dims = resolve(profile, metric, {**others, dimension: _SENTINEL})
    return next(key for key, value in dims.items() if _SENTINEL in value)  # a profile may reformat the value


class Discovery:
    def __init__(self, spec: Spec, caller: Caller, instance_types: Mapping[str, tuple[int, int]] | None = None) -> None:
        """`instance_types`: {SageMaker instance type: (vCPUs, GPUs)} already known (from the stack's alarms);
        only the others are asked of EC2."""
        self._spec = spec
        self._call = caller
        self._problems: list[str] = []
        self._warnings: list[str] = []
        self._instance_types: dict[str, tuple[int, int]] = dict(instance_types or {})
        self._device_series: dict[tuple[str, str, Dimensions, str], dict[str, dict[str, Dimensions]]] = {}

    def inventory(self) -> Inventory:
        """Raises ConfigError when the spec names something AWS does not have."""
        hosts: dict[str, Host] = {}
        found_in: dict[str, str] = {}
        empty: list[str] = []
        for index, group in enumerate(self._spec.hosts):
            path = f"hosts[{index}]"
            group_hosts = self._hosts(group, path)
            if not group_hosts:
                empty.append(f"{path} ({_source(group)})")
            for host in group_hosts:
                if host.instance_id in found_in:
                    # Two groups would give one host two alarm sets with different dimensions or floors.
                    self._problems.append(
                        f"{path}: host {render(host.instance_id)} ({_source(group)}) is also in "
                        f"{found_in[host.instance_id]}"
                    )
                    continue
                hosts[host.instance_id] = host
                found_in[host.instance_id] = f"{path} ({_source(group)})"
        variants = [
            variant for index, entry in enumerate(self._spec.endpoints)
            for variant in self._variants(entry, f"endpoints[{index}]")
        ]
        unique = tuple({(variant.endpoint, variant.name): variant for variant in variants}.values())
        if self._problems:
            raise ConfigError(self._problems)
        return Inventory(
            hosts=tuple(hosts.values()), variants=unique, empty_groups=tuple(empty), warnings=tuple(self._warnings)
        )

    # --- hosts ------------------------------------------------------------------------------------

    def _hosts(self, group: HostGroup, path: str) -> list[Host]:
        if group.instance_ids:
            instance_ids = {instance_id: HOST_DIMENSION for instance_id in group.instance_ids}
        elif group.auto_scaling_group:
            found = self._group_instances(group.auto_scaling_group, f"{path}.auto_scaling_group")
            instance_ids = {instance_id: HOST_DIMENSION for instance_id in found}
        else:
            instance_ids = {
                host_id: id_dimension
                for id_dimension in (HOST_DIMENSION, HOSTNAME_DIMENSION)
                for host_id in self._series_values("Heartbeat", id_dimension, dict(group.dimensions),
                                                   AGENT_COMPONENT)
            }
        log.info("hosts_resolved", group=path, hosts=len(instance_ids))
        declared = {
            GPU_SERIES: tuple(str(index) for index in range(group.gpus)), STORAGE_SERIES: group.mounts,
        }
        hosts = []
        for instance_id, id_dimension in instance_ids.items():
            devices: dict[tuple[str, str], Dimensions] = {}
            values: dict[tuple[str, str], tuple[str, ...]] = {}
            for metric, dimension in (GPU_SERIES, STORAGE_SERIES):
                # The series are read only when needed: to find the devices, or their profile's dimensions.
                if not group.discover_devices and not device_keys(self._spec.naming, metric):
                    values[metric, dimension] = declared[metric, dimension]
                    continue
                read = self._devices(metric, dimension, group, id_dimension).get(instance_id, {})
                wanted = tuple(read) if group.discover_devices else declared[metric, dimension]
                missing = [value for value in wanted if value not in read]
                if missing:
                    self._warnings.append(
                        f"{path}: {instance_id} published no {metric} series for {dimension} "
                        f"{', '.join(missing)} in the last 3 hours, so their alarms, which need the "
                        f"{'/'.join(device_keys(self._spec.naming, metric))} it publishes, are left out"
                    )
                values[metric, dimension] = tuple(value for value in wanted if value in read)
                devices.update(
                    {(dimension, value): read[value] for value in values[metric, dimension] if read[value]}
                )
            hosts.append(Host(
                instance_id=instance_id,
                dimensions=group.dimensions,
                gpus=tuple(sorted(values[GPU_SERIES], key=int)),
                mounts=tuple(sorted(values[STORAGE_SERIES])),
                throughput_floors=group.throughput_floors,
                id_dimension=id_dimension,
                devices=devices,
                auto_scaling_group=group.auto_scaling_group,
            ))
        return hosts

    def _group_instances(self, name: str, path: str) -> list[str]:
        groups = self._call("autoscaling", "DescribeAutoScalingGroups", AutoScalingGroupNames=[name])
        if not groups["AutoScalingGroups"]:
            self._problems.append(
                f"{path}: no such Auto Scaling group (DescribeAutoScalingGroups), got {render(name)}"
            )
            return []
        instances = groups["AutoScalingGroups"][0].get("Instances", [])
        return sorted(item["InstanceId"] for item in instances if item.get("LifecycleState") == "InService")

    def _devices(
        self, metric: str, dimension: str, group: HostGroup, id_dimension: str
    ) -> dict[str, dict[str, Dimensions]]:
        """{host id: {value of `dimension`: its device dimensions}} of the series of `metric` the group's
        hosts publish; read once per group and run."""
        key = (metric, dimension, group.dimensions, id_dimension)
        if key not in self._device_series:
            found: dict[str, dict[str, Dimensions]] = {}
            for host_id, value, extra in self._series(
                metric, dimension, dict(group.dimensions), {}, id_dimension
            ):
                found.setdefault(host_id, {})[value] = extra
            self._device_series[key] = found
        return self._device_series[key]

    def _series_values(
        self, metric: str, id_dimension: str, static: dict[str, str], fixed: dict[str, str]
    ) -> list[str]:
        """Host ids of the recently active series of `metric` identified by `id_dimension`."""
        return sorted({host_id for host_id, _, _ in self._series(metric, id_dimension, static, fixed, id_dimension)})

    def _series(
        self, metric: str, dimension: str, static: dict[str, str], fixed: dict[str, str], id_dimension: str
    ) -> Iterable[tuple[str, str, Dimensions]]:
        """(host id, value of `dimension`, device dimensions) of every recently active series of `metric`
        whose dimension set is exactly what the alarms will use: a series with other dimensions would not
        match them. The device dimensions are the ones the profile adds (`series.device_keys`)."""
        profile = self._spec.naming
        devices = device_keys(profile, metric)
        sample = {id_dimension: "i-0", **static, **fixed, dimension: "0", **dict.fromkeys(devices, "0")}
        name, published = resolve(profile, metric, sample)
        host_key = published_key(profile, metric, id_dimension, sample)
        value_key = published_key(profile, metric, dimension, sample)
        device_names = {key: published_key(profile, metric, key, sample) for key in devices}
        varying = {host_key, value_key, *device_names.values()}
        wanted = {key: value for key, value in published.items() if key not in varying}
        pages = self._call.pages(
            "cloudwatch", "ListMetrics", Namespace=self._spec.metric_namespace, MetricName=name,
            Dimensions=[{"Name": key, "Value": value} for key, value in sorted(wanted.items())],
            RecentlyActive=RECENTLY_ACTIVE,
        )
        for page in pages:
            for series in page.get("Metrics", []):
                dims = {item["Name"]: item["Value"] for item in series.get("Dimensions", [])}
                if set(dims) == set(published) and host_key in dims:
                    extra = tuple(sorted((key, dims[name]) for key, name in device_names.items()))
                    yield dims[host_key], dims[value_key], extra

    # --- SageMaker endpoints ----------------------------------------------------------------------

    def _variants(self, entry: Endpoint, path: str) -> list[Variant]:
        if entry.discover:
            names = [
                item["EndpointName"]
                for page in self._call.pages(
                    "sagemaker", "ListEndpoints", StatusEquals="InService",
                    **({"NameContains": entry.name_contains} if entry.name_contains else {}),
                )
                for item in page.get("Endpoints", [])
            ]
            log.info("endpoints_discovered", entry=path, endpoints=len(names))
            return [variant for name in sorted(names) for variant in self._endpoint(name, entry, path)]
        return self._endpoint(entry.name, entry, path)

    def _endpoint(self, name: str, entry: Endpoint, path: str) -> list[Variant]:
        if entry.variants and entry.instance_type:
            types = {variant: entry.instance_type for variant in entry.variants}
        else:
            described = self._describe_endpoint(name, path)
            if described is None:
                return []
            types = {variant: entry.instance_type or found for variant, found in described.items()}
            if entry.variants:
                missing = [variant for variant in entry.variants if variant not in types]
                if missing:
                    self._problems.append(
                        f"{path}.variants: endpoint {render(name)} has no variant {render(missing[0])}, "
                        f"got {render(list(entry.variants))}"
                    )
                types = {variant: types[variant] for variant in entry.variants if variant in types}
        variants = []
        for variant, instance_type in types.items():
            counts = (0, 0)
            if instance_type:
                counts = self._instance_counts(instance_type, f"{path}.instance_type")
            variants.append(Variant(name, variant, instance_type, vcpus=counts[0], gpus=counts[1]))
        return variants

    def _describe_endpoint(self, name: str, path: str) -> dict[str, str] | None:
        """{variant name: instance type} of a live endpoint, or None (a problem) when it does not exist."""
        try:
            endpoint = self._call("sagemaker", "DescribeEndpoint", EndpointName=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ValidationException":
                raise
            self._problems.append(
                f"{path}.name: no such SageMaker endpoint (DescribeEndpoint), got {render(name)}"
            )
            return None
        config_name = endpoint["EndpointConfigName"]
        config = self._call("sagemaker", "DescribeEndpointConfig", EndpointConfigName=config_name)
        configured = {item["VariantName"]: item.get("InstanceType", "")
                      for item in config["ProductionVariants"]}
        live = [item["VariantName"] for item in endpoint["ProductionVariants"]]
        return {variant: configured.get(variant, "") for variant in live}

    def _instance_counts(self, instance_type: str, path: str) -> tuple[int, int]:
        """(vCPUs, GPUs) of a SageMaker instance type, from the EC2 instance type it runs on."""
        if instance_type not in self._instance_types:
            self._instance_types[instance_type] = self._describe_instance_type(instance_type, path)
        return self._instance_types[instance_type]

    def _describe_instance_type(self, instance_type: str, path: str) -> tuple[int, int]:
        ec2_type = instance_type.removeprefix("ml.")
        try:
            found = self._call("ec2", "DescribeInstanceTypes", InstanceTypes=[ec2_type])["InstanceTypes"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in INVALID_INSTANCE_TYPE:
                raise
            found = []
        if not found:
            self._problems.append(
                f"{path}: EC2 knows no instance type {render(ec2_type)} (DescribeInstanceTypes), "
                f"got {render(instance_type)}"
            )
            return 0, 0
        info = found[0]
        gpus = sum(gpu.get("Count", 0) for gpu in info.get("GpuInfo", {}).get("Gpus", []))
        return int(info["VCpuInfo"]["DefaultVCpus"]), int(gpus)


MAX_FILTER_VALUES = 200  # DescribeInstances takes at most 200 values per filter


def instance_states(caller: Caller, instance_ids: Iterable[str]) -> dict[str, str]:
    """{instance id: EC2 state name} of the instances EC2 still knows; an id it has forgotten is absent.
    A filter, not InstanceIds: one unknown id would fail the whole call (InvalidInstanceID.NotFound)."""
    ids = sorted(set(instance_ids))
    states: dict[str, str] = {}
    for start in range(0, len(ids), MAX_FILTER_VALUES):
        chunk = ids[start:start + MAX_FILTER_VALUES]
        for page in caller.pages(
            "ec2", "DescribeInstances", Filters=[{"Name": "instance-id", "Values": chunk}]
        ):
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    states[instance["InstanceId"]] = instance["State"]["Name"]
    return states


def _source(group: HostGroup) -> str:
    """Where a group's hosts come from, to name it in a problem."""
    if group.instance_ids:
        return "instance_ids"
    if group.auto_scaling_group:
        return f"auto_scaling_group {render(group.auto_scaling_group)}"
    return "discover = true"
