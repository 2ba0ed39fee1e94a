"""Turns the spec's host groups and endpoints into concrete hosts and endpoint variants, reading AWS only.

Hosts come from instance ids, Auto Scaling groups, or the agents' own Heartbeat series (ListMetrics);
their GPU indexes and mount paths from the spec or from the series they publish. Endpoint variants and
instance types come from the spec or from SageMaker; vCPU and GPU counts from EC2's instance type data.
Something the spec names that does not exist is a spec problem (exit 2), found before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog
from botocore.exceptions import ClientError

from agent.config import HOST_DIMENSION
from agent.fleet import HOST as HOSTNAME_DIMENSION
from agent.naming import resolve
from agent.schema import ConfigError, render
from provisioning.aws import Caller
from provisioning.spec import Endpoint, HostGroup, Spec, ThroughputFloor

log = structlog.get_logger()

Dimensions = tuple[tuple[str, str], ...]

RECENTLY_ACTIVE = "PT3H"  # the only window ListMetrics offers: series with data in the last 3 hours
AGENT_COMPONENT = {"Component": "agent"}
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

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(variant.endpoint for variant in self.variants))


def published_key(profile: str, metric: str, dimension: str, others: dict[str, str]) -> str:
    """The name `dimension` is published under in `profile` (a profile may rename dimensions)."""
    _, dims = resolve(profile, metric, {**others, dimension: _SENTINEL})
    return next(key for key, value in dims.items() if _SENTINEL in value)  # a profile may reformat the value


class Discovery:
    def __init__(self, spec: Spec, caller: Caller) -> None:
        self._spec = spec
        self._call = caller
        self._problems: list[str] = []
        self._instance_types: dict[str, tuple[int, int]] = {}

    def inventory(self) -> Inventory:
        """Raises ConfigError when the spec names something AWS does not have."""
        hosts: dict[str, Host] = {}
        for index, group in enumerate(self._spec.hosts):
            for host in self._hosts(group, f"hosts[{index}]"):
                hosts.setdefault(host.instance_id, host)  # the first group that lists an instance wins
        variants = [
            variant for index, entry in enumerate(self._spec.endpoints)
            for variant in self._variants(entry, f"endpoints[{index}]")
        ]
        unique = tuple({(variant.endpoint, variant.name): variant for variant in variants}.values())
        if self._problems:
            raise ConfigError(self._problems)
        return Inventory(hosts=tuple(hosts.values()), variants=unique)

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
        gpus: dict[str, set[str]] = {}
        mounts: dict[str, set[str]] = {}
        if group.discover_devices:
            for id_dimension in sorted(set(instance_ids.values())):
                gpus.update(self._per_instance("GPUHealthy", "GPU", group, id_dimension))
                mounts.update(self._per_instance("StorageUtilization", "MountPath", group, id_dimension))
        else:
            every = tuple(str(index) for index in range(group.gpus))
            gpus = {instance_id: set(every) for instance_id in instance_ids}
            mounts = {instance_id: set(group.mounts) for instance_id in instance_ids}
        return [
            Host(
                instance_id=instance_id,
                dimensions=group.dimensions,
                gpus=tuple(sorted(gpus.get(instance_id, ()), key=int)),
                mounts=tuple(sorted(mounts.get(instance_id, ()))),
                throughput_floors=group.throughput_floors,
                id_dimension=id_dimension,
                auto_scaling_group=group.auto_scaling_group,
            )
            for instance_id, id_dimension in instance_ids.items()
        ]

    def _group_instances(self, name: str, path: str) -> list[str]:
        groups = self._call("autoscaling", "DescribeAutoScalingGroups", AutoScalingGroupNames=[name])
        if not groups["AutoScalingGroups"]:
            self._problems.append(
                f"{path}: no such Auto Scaling group (DescribeAutoScalingGroups), got {render(name)}"
            )
            return []
        instances = groups["AutoScalingGroups"][0].get("Instances", [])
        return sorted(item["InstanceId"] for item in instances if item.get("LifecycleState") == "InService")

    def _per_instance(
        self, metric: str, dimension: str, group: HostGroup, id_dimension: str
    ) -> dict[str, set[str]]:
        """{instance id: values of `dimension`} of the series of `metric` the group's hosts publish."""
        found: dict[str, set[str]] = {}
        for instance_id, value in self._series(metric, dimension, dict(group.dimensions), {}, id_dimension):
            found.setdefault(instance_id, set()).add(value)
        return found

    def _series_values(
        self, metric: str, id_dimension: str, static: dict[str, str], fixed: dict[str, str]
    ) -> list[str]:
        """Host ids of the recently active series of `metric` identified by `id_dimension`."""
        return sorted({host_id for host_id, _ in self._series(metric, id_dimension, static, fixed, id_dimension)})

    def _series(
        self, metric: str, dimension: str, static: dict[str, str], fixed: dict[str, str], id_dimension: str
    ) -> Iterable[tuple[str, str]]:
        """(host id, value of `dimension`) of every recently active series of `metric` whose dimension set
        is exactly what the alarms will use: a series with other dimensions would not match them."""
        profile = self._spec.naming
        sample = {id_dimension: "i-0", **static, **fixed, dimension: "0"}
        name, published = resolve(profile, metric, sample)
        host_key = published_key(profile, metric, id_dimension, sample)
        value_key = published_key(profile, metric, dimension, sample)
        wanted = {key: value for key, value in published.items() if key not in (host_key, value_key)}
        pages = self._call.pages(
            "cloudwatch", "ListMetrics", Namespace=self._spec.metric_namespace, MetricName=name,
            Dimensions=[{"Name": key, "Value": value} for key, value in sorted(wanted.items())],
            RecentlyActive=RECENTLY_ACTIVE,
        )
        for page in pages:
            for series in page.get("Metrics", []):
                dims = {item["Name"]: item["Value"] for item in series.get("Dimensions", [])}
                if set(dims) == set(published) and host_key in dims:
                    yield dims[host_key], dims[value_key]

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
