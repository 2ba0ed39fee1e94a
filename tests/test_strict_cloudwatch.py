"""The strict CloudWatch doubles (the fault proxy in front of moto, and the in-process hook under mock_aws)
refuse what CloudWatch refuses, whole requests at a time; the publisher loses only the refused datum; and
the request sizer measures exactly the body botocore sends."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from moto import mock_aws

from agent.aggregate import Datum
from agent.publisher import Publisher, RequestSizer
from agent.selfstats import AgentStats
from tests.fakes.cloudwatch import MOST_BYTES

NOW = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
HOST = [{"Name": "InstanceId", "Value": "i-0abc"}]


def datum(name: str, value: float) -> dict[str, Any]:
    return {"MetricName": name, "Dimensions": HOST, "Timestamp": NOW, "Values": [value], "Counts": [1.0],
            "Unit": "None"}


def stored(client: Any) -> set[str]:
    return {metric["MetricName"] for metric in client.list_metrics(Namespace="InfraWatch")["Metrics"]}


def client_for(endpoint: str) -> Any:
    return boto3.client("cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(retries={"total_max_attempts": 1}))


def test_the_proxy_in_front_of_moto_refuses_the_whole_request_naming_the_datum(moto_server: str) -> None:
    client = client_for(moto_server)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.put_metric_data(Namespace="InfraWatch", MetricData=[datum("Heartbeat", 1.0), datum("loss", 1e-200)])
    error = refused.value.response["Error"]
    assert (error["Code"], error["Message"]) == (
        "InvalidParameterValue", "The value for parameter MetricData.member.2.Values.member.1 is invalid.")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert stored(client) == set()  # moto, which accepts anything, never saw it
    client.put_metric_data(Namespace="InfraWatch", MetricData=[datum("Heartbeat", 1.0)])
    assert stored(client) == {"Heartbeat"}


@pytest.mark.parametrize(("namespace", "dimension"), [("Infraé", HOST), (":x", HOST),
                                                      ("InfraWatch", [{"Name": "Team", "Value": "données"}])])
def test_the_in_process_double_under_mock_aws_refuses_as_well(namespace: str, dimension: list[Any]) -> None:
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            client.put_metric_data(Namespace=namespace, MetricData=[{**datum("Heartbeat", 1.0),
                                                                     "Dimensions": dimension}])
        assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
        assert client.list_metrics()["Metrics"] == []


def test_a_body_over_1_mb_is_answered_413_by_the_proxy(moto_server: str) -> None:
    big = [{**datum(f"M{i}", 1.0), "Dimensions": [{"Name": "Path", "Value": "p" * 1024}] * 1}
           for i in range(1000)]
    client = client_for(moto_server)
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.put_metric_data(Namespace="InfraWatch", MetricData=big)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_the_publisher_against_the_strict_proxy_loses_only_the_refused_datum(moto_server: str) -> None:
    stamp = NOW.timestamp()
    datums = [Datum("Heartbeat", (("InstanceId", "i-0abc"),), stamp, "Count", (1.0,), (1.0,)),
              Datum("loss", (("InstanceId", "i-0abc"),), stamp, "None", (1e-200,), (1.0,)),
              Datum("CPUUtilization", (("InstanceId", "i-0abc"),), stamp, "Percent", (5.0,), (6.0,))]
    stats = AgentStats()
    client = client_for(moto_server)
    assert Publisher(client, "InfraWatch", stats=stats).publish(datums) == 1
    assert stored(client) == {"Heartbeat", "CPUUtilization"}
    assert (stats.published, stats.dropped) == (7, {"rejected": 1})


def test_a_lost_answer_is_resent_and_counted_as_exactly_the_duplicates_cloudwatch_holds(moto_server: str) -> None:
    from tests.faultproxy import Fault, FaultProxy

    stamp = NOW.timestamp()
    datums = [Datum("Heartbeat", (("InstanceId", "i-0abc"),), stamp, "Count", (1.0,), (1.0,)),
              Datum("CPUUtilization", (("InstanceId", "i-0abc"),), stamp, "Percent", (5.0, 7.0), (3.0, 3.0))]
    stats = AgentStats()
    with FaultProxy(moto_server, delay=0.5) as proxy:
        proxy.inject(Fault.LOST_ANSWER)  # stored by moto, then the answer is lost past the read timeout
        client = boto3.client("cloudwatch", endpoint_url=proxy.url, region_name="us-east-1",
                              config=Config(retries={"total_max_attempts": 1}, read_timeout=0.2))
        publisher = Publisher(client, "InfraWatch", stats=stats, sleep=lambda seconds: proxy.heal())
        assert publisher.publish(datums) == 1
    counts = client_for(moto_server).get_metric_statistics(
        Namespace="InfraWatch", MetricName="CPUUtilization", Dimensions=HOST, StartTime=NOW,
        EndTime=NOW + dt.timedelta(minutes=1), Period=60, Statistics=["SampleCount"])["Datapoints"]
    assert [point["SampleCount"] for point in counts] == [12.0]  # 6 samples, stored twice
    assert (stats.published, stats.possible_duplicates) == (7, 7)


class _Sent:
    """Captures the request botocore is about to send (`before-send`) and answers 200 in its place."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        return AWSResponse(request.url, 200, {}, _Empty())


class _Empty:
    def stream(self, **_: Any) -> Any:
        yield b""


@pytest.mark.parametrize("count", [1, 100, 1000])
def test_the_sizer_measures_exactly_the_body_botocore_sends(count: int) -> None:
    client = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
    sent = _Sent()
    client.meta.events.register("before-send.cloudwatch.PutMetricData", sent)
    data = [{**datum(f"Metric{i}", i * 0.5), "StorageResolution": 1} for i in range(count)]
    client.put_metric_data(Namespace="InfraWatch", MetricData=data)
    request = sent.requests[0]
    body = request.body if isinstance(request.body, bytes) else request.body.read()
    # botocore gzips bodies from 10,240 bytes on; the sizer measures what is compressed (the larger figure).
    compressed = request.headers.get("Content-Encoding") in (b"gzip", "gzip")
    assert compressed is (count >= 100)
    plain = gzip.decompress(body) if compressed else body
    sizer = RequestSizer(client.meta.service_model)
    assert sizer.body("InfraWatch", data) == plain
    assert sizer.body_bytes("InfraWatch", data) == len(plain)
    if client.meta.service_model.resolved_protocol == "json":
        assert json.loads(plain)["MetricData"][0]["MetricName"] == "Metric0"
    assert len(plain) < MOST_BYTES
