"""Hosts and endpoints found in AWS: the agents' own series, Auto Scaling groups, SageMaker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from provisioning.aws import DEFAULT_RATES, Caller, RateLimiter
from provisioning.discovery import Discovery, Host, Inventory, Variant
from provisioning.spec import parse
from tests.fakes.aws import Provisioner, an_image

A, B, C = "i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"


@pytest.fixture
def provisioner(tmp_path: Path) -> Iterator[Provisioner]:
    with mock_aws():
        yield Provisioner(tmp_path)


def inventory(provisioner: Provisioner, spec: dict[str, object]) -> Inventory:
    caller = Caller(provisioner.clients, RateLimiter(DEFAULT_RATES, clock=provisioner.clock,
                                                     sleep=provisioner.clock.sleep), sleep=provisioner.clock.sleep)
    return Discovery(parse(spec), caller).inventory()


def publish(provisioner: Provisioner, metric: str, namespace: str = "InfraWatch", **dims: str) -> None:
    provisioner.client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=[{
        "MetricName": metric, "Value": 1.0,
        "Dimensions": [{"Name": name, "Value": value} for name, value in sorted(dims.items())],
    }])


def test_discover_finds_every_host_publishing_a_heartbeat_with_exactly_the_groups_dimensions(
    provisioner: Provisioner,
) -> None:
    publish(provisioner, "Heartbeat", InstanceId=A, Component="agent")
    publish(provisioner, "Heartbeat", InstanceId=B, Component="agent")
    publish(provisioner, "Heartbeat", InstanceId=C, Component="agent", Cluster="batch")  # another group's agents
    publish(provisioner, "CPUUtilization", InstanceId="i-00000000000000fff")  # no heartbeat: not an agent
    groups = [{"discover": True}, {"discover": True, "dimensions": {"Cluster": "batch"}}]
    found = inventory(provisioner, {"hosts": groups})
    assert found.hosts == (
        Host(A, (), (), ("/",)),
        Host(B, (), (), ("/",)),
        Host(C, (("Cluster", "batch"),), (), ("/",)),
    )


def test_discover_devices_reads_each_hosts_gpu_indexes_and_mounts(provisioner: Provisioner) -> None:
    for gpu in ("0", "1", "10"):
        publish(provisioner, "GPUHealthy", InstanceId=A, GPU=gpu)
    publish(provisioner, "StorageUtilization", InstanceId=A, MountPath="/")
    publish(provisioner, "StorageUtilization", InstanceId=A, MountPath="/scratch")
    publish(provisioner, "StorageUtilization", InstanceId=B, MountPath="/")
    found = inventory(provisioner, {"hosts": [{"instance_ids": [A, B], "discover_devices": True}]})
    assert found.hosts == (Host(A, (), ("0", "1", "10"), ("/", "/scratch")), Host(B, (), (), ("/",)))


def test_an_auto_scaling_group_is_its_in_service_instances(provisioner: Provisioner) -> None:
    ec2 = provisioner.client("ec2")
    image = an_image(ec2)
    ec2.create_launch_template(LaunchTemplateName="gpu", LaunchTemplateData={"ImageId": image,
                                                                             "InstanceType": "g5.2xlarge"})
    provisioner.client("autoscaling").create_auto_scaling_group(
        AutoScalingGroupName="training", LaunchTemplate={"LaunchTemplateName": "gpu"}, MinSize=2, MaxSize=2,
        DesiredCapacity=2, AvailabilityZones=["us-east-1a"],
    )
    members = provisioner.client("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
    found = inventory(provisioner, {"hosts": [{"auto_scaling_group": "training", "gpus": 1}]})
    assert found.hosts == tuple(
        Host(instance_id, (), ("0",), ("/",), auto_scaling_group="training")
        for instance_id in sorted(item["InstanceId"] for item in members)
    )
    assert len(found.hosts) == 2


def create_endpoint(provisioner: Provisioner, name: str, variants: dict[str, str]) -> None:
    sagemaker = provisioner.client("sagemaker")
    sagemaker.create_model(ModelName=name, ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
                           PrimaryContainer={"Image": f"{name}:1"})
    sagemaker.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": variant, "ModelName": name, "InitialInstanceCount": 1, "InstanceType": instance_type}
        for variant, instance_type in variants.items()
    ])
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)


def test_endpoint_discovery_reads_variants_and_instance_counts(provisioner: Provisioner) -> None:
    create_endpoint(provisioner, "recsys-ranker", {"blue": "ml.g4dn.12xlarge", "green": "ml.c5.xlarge"})
    create_endpoint(provisioner, "recsys-scorer", {"AllTraffic": "ml.g4dn.xlarge"})
    create_endpoint(provisioner, "fraud", {"AllTraffic": "ml.c5.xlarge"})
    found = inventory(provisioner, {"endpoints": [{"discover": True, "name_contains": "recsys"}]})
    assert found.variants == (
        Variant("recsys-ranker", "blue", "ml.g4dn.12xlarge", vcpus=48, gpus=4),
        Variant("recsys-ranker", "green", "ml.c5.xlarge", vcpus=4, gpus=0),
        Variant("recsys-scorer", "AllTraffic", "ml.g4dn.xlarge", vcpus=4, gpus=1),
    )
    assert found.endpoints == ("recsys-ranker", "recsys-scorer")


def test_a_named_endpoint_keeps_only_the_variants_the_spec_lists(provisioner: Provisioner) -> None:
    create_endpoint(provisioner, "ranker", {"blue": "ml.g4dn.12xlarge", "green": "ml.c5.xlarge"})
    found = inventory(provisioner, {"endpoints": [{"name": "ranker", "variants": ["green"]}]})
    assert found.variants == (Variant("ranker", "green", "ml.c5.xlarge", vcpus=4, gpus=0),)


def test_an_agent_off_ec2_is_found_by_its_host_dimension_with_its_devices(provisioner: Provisioner) -> None:
    # Off EC2 the agent publishes its hostname as `Host` instead of `InstanceId`; its alarms must use it.
    publish(provisioner, "Heartbeat", InstanceId=A, Component="agent")
    publish(provisioner, "Heartbeat", Host="gpu-box-1", Component="agent")
    publish(provisioner, "GPUHealthy", Host="gpu-box-1", GPU="0")
    publish(provisioner, "StorageUtilization", Host="gpu-box-1", MountPath="/data")
    found = inventory(provisioner, {"hosts": [{"discover": True, "discover_devices": True}]})
    assert found.hosts == (
        Host(A, (), (), ()),
        Host("gpu-box-1", (), ("0",), ("/data",), id_dimension="Host"),
    )


def test_under_cwagent_declared_devices_take_their_published_device_dimensions(provisioner: Provisioner) -> None:
    # The CloudWatch agent's GPU series carry the GPU's name, its disk series the device and filesystem type:
    # values only the host knows, read from its series. A declared GPU that publishes nothing is left out.
    publish(provisioner, "GPUHealthy", "CWAgent", InstanceId=A, index="0", name="NVIDIA H100 80GB HBM3", arch="Hopper")
    publish(provisioner, "GPUHealthy", "CWAgent", InstanceId=A, index="1", name="NVIDIA H100 80GB HBM3")  # no arch
    publish(provisioner, "disk_used_percent", "CWAgent", InstanceId=A, path="/", device="nvme0n1p1", fstype="ext4")
    found = inventory(provisioner, {"naming": "cwagent", "hosts": [{"instance_ids": [A], "gpus": 2}]})
    assert found.hosts == (Host(A, (), ("0",), ("/",), devices={
        ("GPU", "0"): (("GPUArch", "Hopper"), ("GPUName", "NVIDIA H100 80GB HBM3")),
        ("MountPath", "/"): (("Device", "nvme0n1p1"), ("FSType", "ext4")),
    }),)
    assert found.warnings == (
        f"hosts[0]: {A} published no GPUHealthy series for GPU 1 in the last 3 hours, so their alarms, which "
        "need the GPUName/GPUArch it publishes, are left out",
    )


def test_under_cwagent_discover_devices_finds_the_devices_with_their_dimensions(provisioner: Provisioner) -> None:
    publish(provisioner, "GPUHealthy", "CWAgent", InstanceId=A, index="7", name="NVIDIA A10G", arch="Ampere")
    publish(provisioner, "disk_used_percent", "CWAgent", InstanceId=A, path="/data", device="nvme1n1", fstype="xfs")
    found = inventory(provisioner, {"naming": "cwagent", "hosts": [{"instance_ids": [A], "discover_devices": True}]})
    assert found.hosts == (Host(A, (), ("7",), ("/data",), devices={
        ("GPU", "7"): (("GPUArch", "Ampere"), ("GPUName", "NVIDIA A10G")),
        ("MountPath", "/data"): (("Device", "nvme1n1"), ("FSType", "xfs")),
    }),)
    assert found.warnings == ()
