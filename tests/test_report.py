"""`infrawatch-report` end to end over HTTP against a moto server loaded with known data.

Two hosts, 4 GPUs each (8 in all), one minute per period over 3 hours:
- host A (an EC2 g5.12xlarge: 4 GPUs, 5.672 USD/h) is idle (GPU 2 %) on every GPU for minutes 20..109
  and publishes nothing for minutes 130..166 (a 37-minute Heartbeat gap); its CPU spikes to 95 % for
  minutes 60..64;
- host B (unknown to EC2) publishes from minute 30 on, GPUs at 20 %, memory at 95 %.
moto answers GetMetricData with plain MetricStat queries (no Metrics Insights), the path tested here.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import boto3
import parliament
import pytest

from provisioning.alarms import ownership_marker
from provisioning.aws import Clients, sdk_region
from report import iam
from report.cli import main
from tests.conftest import reset_moto
from tests.fakes.aws import an_image, session_with_shared_models

MINUTES = 180
GAP = range(130, 167)  # 37 minutes without anything from host A
IDLE = range(20, 110)  # 90 minutes of idle GPUs on host A
SPIKE = range(60, 65)
B_FROM = 30
HOST_B = "i-0bbbbbbbbbbbbbbbb"
STACK = "test"
TAGS = [{"Key": "managed-by", "Value": "infrawatch"}, {"Key": "infrawatch:stack", "Value": STACK}]


class Fleet:
    def __init__(self, endpoint: str) -> None:
        ec2: Any = boto3.client("ec2")
        image = an_image(ec2)
        self.host_a = ec2.run_instances(ImageId=image, InstanceType="g5.12xlarge", MinCount=1,
                                        MaxCount=1)["Instances"][0]["InstanceId"]
        launched = dt.datetime.now(dt.timezone.utc)
        self.start = launched.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        self.end = self.start + dt.timedelta(minutes=MINUTES)
        self.cloudwatch: Any = boto3.client("cloudwatch")
        datums = [datum for minute in range(MINUTES) for datum in self._minute(minute)]
        for offset in range(0, len(datums), 1000):
            self.cloudwatch.put_metric_data(Namespace="InfraWatch", MetricData=datums[offset:offset + 1000])

    def _minute(self, minute: int) -> list[dict[str, Any]]:
        at = self.start + dt.timedelta(minutes=minute, seconds=5)
        datums = []
        if minute not in GAP:
            cpu = 95.0 if minute in SPIKE else 40.0
            datums += self._host("InstanceId", self.host_a, at, cpu=cpu, memory=50.0,
                                 gpus=[2.0 if minute in IDLE else 80.0 + index for index in range(4)])
            datums.append(self._datum("StorageUtilization", 60.0, at, InstanceId=self.host_a, MountPath="/"))
        if minute >= B_FROM:
            datums += self._host("InstanceId", HOST_B, at, cpu=10.0, memory=95.0, gpus=[20.0] * 4)
        return datums

    def _host(self, key: str, host: str, at: dt.datetime, *, cpu: float, memory: float,
              gpus: list[float]) -> list[dict[str, Any]]:
        return [
            self._datum("Heartbeat", 1.0, at, **{key: host, "Component": "agent"}),
            self._datum("CPUUtilization", cpu, at, **{key: host}),
            self._datum("MemoryUtilization", memory, at, **{key: host}),
            *(self._datum("GPUUtilization", value, at, **{key: host, "GPU": str(index)})
              for index, value in enumerate(gpus)),
        ]

    @staticmethod
    def _datum(name: str, value: float, at: dt.datetime, **dims: str) -> dict[str, Any]:
        # Sorted by name, as the agent publishes them: moto matches a query's dimensions to a datum's by
        # comparing both lists sorted with a broken `Dimension.__lt__`, which only agrees when both come sorted.
        return {"MetricName": name, "Value": value, "Timestamp": at,
                "Dimensions": [{"Name": key, "Value": item} for key, item in sorted(dims.items())]}

    def alarm(self, name: str, tags: list[dict[str, str]] = TAGS, **definition: Any) -> None:
        """An alarm as provision-alarms writes it: its description ends with the owning stack's marker."""
        owner = dict((tag["Key"], tag["Value"]) for tag in tags).get("infrawatch:stack", STACK)
        self.cloudwatch.put_metric_alarm(AlarmName=f"{STACK}/{name}", Tags=tags,
                                         AlarmDescription=ownership_marker(owner), **definition)

    def args(self, *extra: str) -> list[str]:
        return ["--namespace", "InfraWatch", "--since", self.start.isoformat(), "--until", self.end.isoformat(),
                "--no-progress", *extra]

    def now(self) -> dt.datetime:
        return self.end + dt.timedelta(minutes=5)


@pytest.fixture(scope="module")
def server(moto_upstream: str) -> str:
    """The run's moto server, emptied for this module, which loads the fleet's 2,000 datums into it once."""
    reset_moto(moto_upstream)
    return moto_upstream


@pytest.fixture(scope="module")
def fleet(server: str) -> Fleet:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", server)
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_REGION", "us-east-1")):
            patch.setenv(name, value)
        fleet = Fleet(server)
        dims = [{"Name": "InstanceId", "Value": fleet.host_a}]
        fleet.alarm(f"host/{fleet.host_a}/heartbeat_missing", MetricName="Heartbeat", Namespace="InfraWatch",
                    Dimensions=[*dims, {"Name": "Component", "Value": "agent"}], Statistic="Sum", Period=60,
                    EvaluationPeriods=3, DatapointsToAlarm=3, Threshold=1, ComparisonOperator="LessThanThreshold",
                    TreatMissingData="breaching")
        fleet.alarm(f"host/{fleet.host_a}/gpu_idle@gpu0", MetricName="GPUUtilization", Namespace="InfraWatch",
                    Dimensions=[*dims, {"Name": "GPU", "Value": "0"}], Statistic="Maximum", Period=300,
                    EvaluationPeriods=6, DatapointsToAlarm=6, Threshold=5, ComparisonOperator="LessThanThreshold",
                    TreatMissingData="missing")
        fleet.alarm(f"host/{fleet.host_a}/cpu_math", EvaluationPeriods=5, DatapointsToAlarm=3, Threshold=0.9,
                    ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching", Metrics=[
                        {"Id": "cpu", "ReturnData": False, "MetricStat": {"Metric": {
                            "Namespace": "InfraWatch", "MetricName": "CPUUtilization", "Dimensions": dims},
                            "Period": 60, "Stat": "Average"}},
                        {"Id": "share", "Expression": "IF(cpu > 0, cpu / 100, 0)", "ReturnData": True}])
        # Named like the stack's but tagged as another's: never replayed.
        fleet.alarm("host/other", tags=[{"Key": "infrawatch:stack", "Value": "other"}], MetricName="Heartbeat",
                    Namespace="InfraWatch", Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                    ComparisonOperator="LessThanThreshold")
        yield fleet


@pytest.fixture
def aws(server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)
    return server


def clients() -> Clients:
    """What `main` makes without `clients=`, with the run's parsed service models (see the fake)."""
    return Clients(session_with_shared_models(sdk_region()))


def run(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(fleet.args(*args), clients=clients(), now=fleet.now, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_idle_hours_cost_availability_and_backtests_are_exact(fleet: Fleet, aws: str) -> None:
    code, out, err = run(fleet, "--format", "json", "--stack", STACK)
    assert (code, err) == (0, "")
    report = json.loads(out)
    hosts = {host["host"]: host for host in report["hosts"]}
    a, b = hosts[fleet.host_a], hosts[HOST_B]

    assert a["instance_type"] == "g5.12xlarge"
    assert a["idle_gpu_hours"] == 6.0  # 4 GPUs × 90 idle minutes
    assert [gpu["idle_hours"] for gpu in a["gpus"]] == [1.5] * 4
    assert round(a["idle_cost_usd"], 4) == 8.508  # 6 GPU-h × 5.672 / 4 USD
    assert a["availability"]["downtime_s"] == 37 * 60
    assert round(a["availability"]["percent"], 2) == 79.44  # (1 − 37 / 180) × 100
    assert a["availability"]["downtime"] == [[
        (fleet.start + dt.timedelta(minutes=130)).isoformat(), (fleet.start + dt.timedelta(minutes=167)).isoformat()]]
    assert a["availability"]["basis"] == "EC2 launch"

    assert b["instance_type"] is None and b["idle_cost_usd"] is None and b["price"] is None
    assert b["idle_gpu_hours"] == 0.0
    assert (b["availability"]["basis"], b["availability"]["percent"]) == ("heartbeats", 100.0)
    assert b["availability"]["start"] == (fleet.start + dt.timedelta(minutes=B_FROM)).isoformat()
    assert round(report["fleet_availability_percent"], 2) == 88.79  # (143 + 150) / (180 + 150)
    assert round(report["idle_cost_usd"], 4) == 8.508

    gpu = a["utilization"]["gpu"]  # 4 × 143 per-minute averages: 360 at 2 %, 53 each at 80..83 %
    assert (gpu["p50"], gpu["p95"], gpu["max"], gpu["periods"], gpu["expected_periods"]) == (2.0, 83.0, 83.0, 143, 180)
    assert a["utilization"]["cpu"]["max"] == 95.0 and a["utilization"]["storage"]["max"] == 60.0
    assert a["utilization"]["gpu_memory"] is None  # never published: absent, not 0 %
    assert a["gpus"][0]["utilization"]["p95"] == 80.0
    assert a["hints"] == []
    assert b["hints"] == [
        "GPU p95 20.0 % < 30 % over 4 GPUs: fewer or smaller GPUs would have carried this load",
        "memory p95 95.0 % > 90 %: the host ran short of memory",
    ]

    backtests = {item["alarm"].split("/")[-1]: item for item in report["backtests"]}
    assert sorted(backtests) == ["cpu_math", "gpu_idle@gpu0", "heartbeat_missing"]
    assert (backtests["heartbeat_missing"]["alarms"], backtests["heartbeat_missing"]["alarm_s"]) == (1, 33 * 60)
    assert (backtests["gpu_idle@gpu0"]["alarms"], backtests["gpu_idle@gpu0"]["alarm_s"]) == (1, 65 * 60)
    assert (backtests["cpu_math"]["alarms"], backtests["cpu_math"]["alarm_s"]) == (1, 5 * 60)
    # The heartbeat alarm goes to ALARM once three missing minutes fill its range (minute 134 ends at 135).
    assert backtests["heartbeat_missing"]["episodes"] == [[
        (fleet.start + dt.timedelta(minutes=135)).isoformat(), (fleet.start + dt.timedelta(minutes=168)).isoformat()]]
    # One GetMetricData call for the 28 host queries and one for the 3 alarms' queries.
    assert report["api_calls"]["GetMetricData"] == 2


def test_the_terminal_tables_mark_partial_data_and_unknown_prices(fleet: Fleet, aws: str) -> None:
    code, out, _ = run(fleet)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("infrawatch report: InfraWatch (native names), ")
    gpu_row = next(line for line in lines if line.startswith(fleet.host_a) and " GPU " in line and "partial" in line)
    assert gpu_row.split()[-3:] == ["partial", "79", "%"]
    cost_b = next(line for line in lines if line.startswith(HOST_B) and "unknown to EC2" in line)
    assert cost_b.split()[-2:] == ["price", "n/a"]
    fleet_row = [line for line in lines if line.startswith("fleet")]
    assert fleet_row[0].split()[-1] == "8.51" and fleet_row[1].split()[-1] == "88.79"


def test_markdown_and_csv_carry_the_same_tables(fleet: Fleet, aws: str) -> None:
    _, markdown, _ = run(fleet, "--format", "markdown")
    _, csv_text, _ = run(fleet, "--format", "csv")
    assert "| fleet |  | 8 | 6.00 |  | 8.51 |" in markdown
    assert "Idle GPU cost,fleet,,8,6.00,,8.51" in csv_text


@pytest.mark.parametrize(("args", "problem"), [
    (["--since", "500d"], "--since: CloudWatch keeps 15 months (455 days) of data, got a window starting 500 days ago"),
    (["--since", "fortnight"],
     '--since: must be a duration like "14d", "12h", "2w" or an ISO 8601 time, got "fortnight"'),
    (["--idle-threshold", "0"], "--idle-threshold: must be above 0 and at most 100 %, got 0"),
])
def test_bad_windows_exit_2_naming_the_value(args: list[str], problem: str) -> None:
    err = io.StringIO()
    assert main(["--no-progress", *args], out=io.StringIO(), err=err) == 2
    assert err.getvalue().splitlines()[0].startswith(problem)


def test_a_window_ending_in_the_future_exits_2() -> None:
    err = io.StringIO()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert main(["--until", "2026-01-02T00:00:00Z"], now=lambda: now, out=io.StringIO(), err=err) == 2
    assert err.getvalue() == (
        "--until: must not be in the future, got 2026-01-02T00:00:00+00:00 (now 2026-01-01T00:00:00+00:00)\n")


def test_an_unknown_namespace_and_an_empty_window_exit_2(fleet: Fleet, aws: str) -> None:
    err = io.StringIO()
    args = fleet.args()
    args[1] = "NoSuchNamespace"
    assert main(args, now=fleet.now, out=io.StringIO(), err=err) == 2
    assert err.getvalue() == ('--namespace: "NoSuchNamespace" holds no infrawatch host series under the "native" '
                              "naming profile (ListMetrics finds no metric in it at all)\n")
    err = io.StringIO()
    before = fleet.start - dt.timedelta(hours=2)
    args = ["--since", before.isoformat(), "--until", (before + dt.timedelta(hours=1)).isoformat(), "--no-progress"]
    assert main(args, now=fleet.now, out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith('--since/--until: no datapoint in "InfraWatch" between ')


def test_a_prices_file_with_bad_rows_exits_2_naming_each(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("region,instance_type,gpus,usd_per_hour,as_of,source\n"
                      "us-east-1,g5.xlarge,1,1.006,2024-06-01,page\n"
                      "us-east-1,g5.2xlarge,zero,-1,yesterday,page\n"
                      "us-east-1,g5.xlarge,1,1.006,2024-06-01,page\n")
    err = io.StringIO()
    assert main(["--prices", str(prices)], out=io.StringIO(), err=err) == 2
    assert err.getvalue().splitlines() == [
        f'{prices}:3: gpus: must be a whole number of at least 1, got "zero"',
        f'{prices}:3: usd_per_hour: must be a number above 0, got "-1"',
        f'{prices}:3: as_of: must be a date like 2024-06-01, got "yesterday"',
        f"{prices}:4: repeats g5.xlarge in us-east-1",
    ]


def test_the_shipped_prices_parse_and_name_their_source() -> None:
    from report import prices

    table = prices.load()
    assert table[("us-east-1", "g5.12xlarge")].per_gpu_hour == 5.672 / 4
    assert all(price.source and price.as_of for price in table.values())


EXAMPLE_SPEC = str(Path(__file__).resolve().parent.parent / "provisioning" / "examples" / "alarms.toml")


@pytest.mark.parametrize("args", [[], ["--stack", "ml-platform"], ["--config", EXAMPLE_SPEC]])
def test_print_iam_policy_is_read_only_and_parliament_finds_nothing(args: list[str]) -> None:
    out = io.StringIO()
    assert main(["print-iam-policy", *args], out=out) == 0
    policy = json.loads(out.getvalue())
    findings = parliament.analyze_policy_string(out.getvalue()).findings
    assert [(finding.issue, finding.detail) for finding in findings] == []
    actions = [action for statement in policy["Statement"] for action in statement["Action"]]
    assert all(action.split(":")[1].startswith(("Describe", "Get", "List")) for action in actions)
    assert policy["Statement"][1]["Resource"] == (
        "arn:aws:cloudwatch:*:*:alarm:ml-platform/*" if args else "arn:aws:cloudwatch:*:*:alarm:*")


def test_parliament_would_catch_a_write_granted_on_every_alarm() -> None:
    policy = iam.policy()
    policy["Statement"][1]["Action"].append("cloudwatch:PutMetricAlarm")
    policy["Statement"][1]["Resource"] = "*"
    findings = parliament.analyze_policy_string(json.dumps(policy)).findings
    assert "RESOURCE_STAR" in [finding.issue for finding in findings]



def chromium(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a page from disk: a fresh profile, nothing that reaches the network on its own."""
    from tests.conftest import tool

    return subprocess.run(
        [tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_the_html_page_renders_its_charts_in_chromium_offline(fleet: Fleet, aws: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, _, err = run(fleet, "--stack", STACK, "--html", str(page))
    assert (code, err) == (0, f"wrote {page.resolve()}\n")
    text = page.read_text()
    # Self-contained: no script, and every reference points inside the page (an anchor or a data: URI,
    # the heat map's raster).
    assert "<script" not in text
    assert all(ref.startswith(("#", "data:image/png;base64,"))
               for ref in re.findall(r'(?:href|src)="([^"]*)"', text))

    dom = chromium(page, tmp_path, "--dump-dom")
    assert console_messages(dom.stderr) == []
    charts = re.findall(r'<figure class="chart"><svg.*?</svg>', dom.stdout, flags=re.S)
    assert len(charts) == 4  # heat map, idle cost, availability, backtest
    assert all(chart.count("<path") > 10 for chart in charts)
    shot = tmp_path / "report.png"
    chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_console_check_would_catch_an_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("chart failed")</script></body></html>')
    messages = console_messages(chromium(page, tmp_path, "--dump-dom").stderr)
    assert len(messages) == 1 and '"chart failed"' in messages[0]


# --- SageMaker endpoints ------------------------------------------------------------------------------

SPIKE_MINUTES = range(90, 100)  # ModelLatency 2.5 s instead of 0.2 s
REQUESTS = 100  # per minute


class PercentileCloudWatch:
    """moto's CloudWatch, except that percentile statistics (which moto cannot compute) are answered from the
    raw ModelLatency values this test published, by nearest rank over each period's values."""

    def __init__(self, moto: Any, raw: dict[int, list[float]]) -> None:
        self._moto = moto
        self._raw = raw  # epoch second of each minute -> that minute's latencies, one per request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._moto, name)

    def get_metric_data(self, **request: Any) -> dict[str, Any]:
        queries = request["MetricDataQueries"]
        assert len(queries) <= 500
        plain = [query for query in queries if not query["MetricStat"]["Stat"].startswith("p")]
        results = self._moto.get_metric_data(**{**request, "MetricDataQueries": plain})["MetricDataResults"] \
            if plain else []
        start, end = int(request["StartTime"].timestamp()), int(request["EndTime"].timestamp())
        for query in queries:
            stat = query["MetricStat"]
            if not stat["Stat"].startswith("p"):
                continue
            assert stat["Metric"]["MetricName"] == "ModelLatency"
            share, period = float(stat["Stat"][1:]) / 100, stat["Period"]
            stamps, values = [], []
            for begin in range(start, end, period):
                latencies = sorted(v for minute, items in self._raw.items() if begin <= minute < begin + period
                                   for v in items)
                if latencies:
                    stamps.append(dt.datetime.fromtimestamp(begin, tz=dt.timezone.utc))
                    values.append(latencies[max(0, -(-int(share * len(latencies) * 1000) // 1000) - 1)])
            results.append({"Id": query["Id"], "Timestamps": stamps, "Values": values})
        return {"MetricDataResults": results}


class EndpointClients:
    def __init__(self, cloudwatch: Any) -> None:
        self._clients = Clients()
        self._cloudwatch = cloudwatch

    def __getitem__(self, service: str) -> Any:
        return self._cloudwatch if service == "cloudwatch" else self._clients[service]


def test_an_endpoints_latency_spike_against_its_alarm_thresholds(fleet: Fleet, aws: str, tmp_path: Path) -> None:
    sagemaker: Any = boto3.client("sagemaker")
    sagemaker.create_model(ModelName="chat-model", ExecutionRoleArn="arn:aws:iam::123456789012:role/x",
                           PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/chat:1"})
    sagemaker.create_endpoint_config(EndpointConfigName="chat-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "chat-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.g4dn.xlarge"}])
    sagemaker.create_endpoint(EndpointName="chat", EndpointConfigName="chat-config")
    dims = [{"Name": "EndpointName", "Value": "chat"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    raw: dict[int, list[float]] = {}
    datums = []
    for minute in range(MINUTES):
        at = fleet.start + dt.timedelta(minutes=minute, seconds=5)
        latency = 2_500_000.0 if minute in SPIKE_MINUTES else 200_000.0
        raw[int(at.timestamp()) - 5] = [latency] * REQUESTS
        for name, value in (("Invocations", REQUESTS), ("Invocation5XXErrors", 5 if minute == 95 else 0),
                            ("InvocationModelErrors", 0)):
            datums.append({"MetricName": name, "Value": float(value), "Timestamp": at, "Dimensions": dims})
        datums.append({"MetricName": "ModelLatency", "Values": [latency], "Counts": [float(REQUESTS)],
                       "Timestamp": at, "Dimensions": dims})
    cloudwatch: Any = boto3.client("cloudwatch")
    for offset in range(0, len(datums), 1000):
        cloudwatch.put_metric_data(Namespace="AWS/SageMaker", MetricData=datums[offset:offset + 1000])
    tags = [{"Key": "managed-by", "Value": "infrawatch"}, {"Key": "infrawatch:stack", "Value": "ep"}]
    for percentile, threshold_ms in (("p99", 1000), ("p90", 500)):
        cloudwatch.put_metric_alarm(
            AlarmName=f"ep/sagemaker/chat/AllTraffic/endpoint_latency_{percentile}", Tags=tags,
            Namespace="AWS/SageMaker", MetricName="ModelLatency", Dimensions=dims, ExtendedStatistic=percentile,
            Period=60, EvaluationPeriods=5, DatapointsToAlarm=3, Threshold=threshold_ms * 1000.0,
            ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
            EvaluateLowSampleCountPercentile="ignore", AlarmDescription=ownership_marker("ep"))
    spec = tmp_path / "spec.toml"
    spec.write_text('stack = "ep"\nnamespace = "InfraWatch"\n[[endpoints]]\nname = "chat"\n')

    out = io.StringIO()
    args = ["--config", str(spec), "--since", fleet.start.isoformat(), "--until", fleet.end.isoformat(),
            "--no-progress", "--format", "json"]
    clients = EndpointClients(PercentileCloudWatch(cloudwatch, raw))
    assert main(args, clients=clients, now=fleet.now, out=out, err=io.StringIO()) == 0  # type: ignore[arg-type]
    report = json.loads(out.getvalue())
    assert report["endpoints"] == [{
        "endpoint": "chat", "variant": "AllTraffic", "instance_type": "ml.g4dn.xlarge",
        "invocations": 18_000.0, "error_5xx_rate": 5 / 18_000, "model_error_rate": 0.0,
        # 10 of 180 minutes spiked: 5.6 % of requests, above the 90th percentile, below the 99th.
        "latency_ms": {"p50": 200.0, "p90": 200.0, "p99": 2500.0},
        "thresholds_ms": {"p90": 500.0, "p99": 1000.0},
    }]
    backtests = {item["alarm"].rsplit("_", 1)[1]: item for item in report["backtests"]}
    # p90: 3 of 5 minutes above the threshold, ALARM from the spike's third minute (92, evaluated at 93) until
    # only two of the last five breach (after minute 101).
    assert (backtests["p90"]["alarms"], backtests["p90"]["alarm_s"]) == (1, 10 * 60)
    assert backtests["p90"]["episodes"][0][0] == (fleet.start + dt.timedelta(minutes=93)).isoformat()
    # p99 ignores low sample counts: 5 × 100 requests are fewer than the 10 / (1 − 0.99) = 1,000 it needs,
    # so CloudWatch would never have evaluated it.
    assert (backtests["p99"]["alarms"], backtests["p99"]["alarm_s"]) == (0, 0)


def test_sub_minute_periods_only_for_the_last_3_hours() -> None:
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    err = io.StringIO()
    assert main(["--since", "4h", "--period", "10"], now=lambda: now, out=io.StringIO(), err=err) == 2
    assert err.getvalue() == ("--period: 10 s datapoints exist only for high-resolution metrics of the last 3 hours, "
                              "at most 100,800 per query; this window starts 4.0 h ago, got 10\n")
    err = io.StringIO()
    assert main(["--since", "20d", "--period", "60"], now=lambda: now, out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("--period: must be 1, 5, 10, 30 (high resolution, last 3 hours) or a multiple "
                                     "of 60 seconds and at least 300 for this window")


@pytest.mark.parametrize(("days", "period"), [(1, 60), (15, 60), (16, 300), (63, 300), (64, 3600), (455, 3600)])
def test_the_default_period_is_the_finest_still_stored(days: int, period: int) -> None:
    from report.window import window

    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    chosen = window(f"{days}d", None, now)
    assert chosen.period == period and chosen.periods <= 100_800


def test_html_without_matplotlib_is_a_clear_error() -> None:
    from report.html import missing_library

    assert missing_library(lambda name: None) == [
        "--html: needs matplotlib, which is not installed: pip install 'infrawatch[report]'"]
    assert missing_library() == []


def test_availability_runs_from_launch_to_termination() -> None:
    from report.hosts import Instance, availability
    from report.window import Window

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    window = Window(start, start + dt.timedelta(hours=2), 60)
    minute = int(start.timestamp()) // 60 * 60
    heartbeats = {minute + 60 * index: 1.0 for index in range(10, 50)}  # minutes 10..49
    instance = Instance("g5.xlarge", start + dt.timedelta(minutes=9, seconds=30), start + dt.timedelta(minutes=60))
    found = availability(window, heartbeats, instance)
    assert found is not None
    # Launched 00:09:30: expected from the first whole minute (00:10) to the termination (01:00).
    assert (found.start, found.end) == (start + dt.timedelta(minutes=10), start + dt.timedelta(minutes=60))
    assert found.downtime == ((start + dt.timedelta(minutes=50), start + dt.timedelta(minutes=60)),)
    assert found.percent == 80.0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_follows_the_batches_on_a_terminal(fleet: Fleet, aws: str) -> None:
    err = Terminal()
    args = [arg for arg in fleet.args() if arg != "--no-progress"]
    out = io.StringIO()
    assert main([*args, "--format", "json"], clients=clients(), now=fleet.now, out=out, err=err) == 0
    # The fleet's 28 queries, and 5 more per SageMaker variant another test of this module may have published
    # (the report finds endpoints by their metrics): counted from the report itself, whatever the order.
    queries = 28 + 5 * len(json.loads(out.getvalue())["endpoints"])
    assert err.getvalue() == f"\rGetMetricData [{'#' * 30}] {queries}/{queries} queries\n"


def test_cwagent_names_and_dimensions_are_read_through_the_naming_profile() -> None:
    from report.hosts import HostSeries

    class Listing:
        def list_metrics(self, namespace: str, metric: str) -> list[tuple[tuple[str, str], ...]]:
            assert namespace == "CWAgent"
            return {
                "cpu_usage_active": [(("InstanceId", "i-0123456789abcdef0"), ("cpu", "cpu-total")),
                                     (("InstanceId", "i-0123456789abcdef0"), ("cpu", "cpu3"))],  # a core
                "nvidia_smi_utilization_gpu": [(("InstanceId", "i-0123456789abcdef0"), ("index", "2"),
                                                ("name", "NVIDIA H100"))],
                "mem_used_percent": [(("AutoScalingGroupName", "gpu-asg"),)],  # a roll-up: no host
                "Heartbeat": [(("Component", "agent"), ("host", "build-01"))],  # off EC2, cwagent's `host`
            }.get(metric, [])

    found = HostSeries("CWAgent", "cwagent").discover(Listing())  # type: ignore[arg-type]
    assert [(item.kind, item.host, item.device, item.metric) for item in found] == [
        ("cpu", "i-0123456789abcdef0", "", "cpu_usage_active"),
        ("gpu", "i-0123456789abcdef0", "2", "nvidia_smi_utilization_gpu"),
        ("heartbeat", "build-01", "", "Heartbeat"),
    ]


def test_a_terminated_instance_ends_when_ec2_says_it_was_terminated(fleet: Fleet, aws: str) -> None:
    from provisioning.aws import Caller, RateLimiter
    from report.fetch import Reader
    from report.hosts import describe_instances

    ec2: Any = boto3.client("ec2")
    image = an_image(ec2)
    gone = ec2.run_instances(ImageId=image, InstanceType="p4d.24xlarge", MinCount=1,
                             MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.terminate_instances(InstanceIds=[gone])
    reason = ec2.describe_instances(InstanceIds=[gone])["Reservations"][0]["Instances"][0]["StateTransitionReason"]
    found = describe_instances(Reader(Caller(Clients(), RateLimiter({}))), [gone, HOST_B, "build-01"])
    assert list(found) == [gone]  # a hostname is never sent; an id EC2 does not know is simply absent
    stamp = found[gone].terminated
    assert stamp is not None and reason == f"User initiated ({stamp:%Y-%m-%d %H:%M:%S} UTC)"
    assert found[gone].instance_type == "p4d.24xlarge"


@pytest.mark.parametrize(("queries", "calls"), [(500, 1), (501, 2)])
def test_get_metric_data_takes_500_queries_a_call(aws: str, queries: int, calls: int) -> None:
    from provisioning.aws import Caller, RateLimiter
    from report.fetch import MAX_QUERIES_PER_CALL, Query, Reader

    assert MAX_QUERIES_PER_CALL == 500
    progress: list[tuple[int, int]] = []
    reader = Reader(Caller(Clients(), RateLimiter({})), lambda done, total: progress.append((done, total)))
    wanted = [Query("Bench", f"M{index}", (), "Average", 60) for index in range(queries)]
    end = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fetched = reader.fetch(wanted, end - dt.timedelta(minutes=5), end)
    assert reader.calls["GetMetricData"] == calls
    assert len(fetched) == queries and not any(fetched.values())
    assert progress[-1] == (queries, queries) and len(progress) == calls


def test_availability_is_measured_in_heartbeat_periods() -> None:
    """An agent with publish.interval = 300 sends one Heartbeat per 5 minutes: at 60 s slots 4 of 5 minutes
    would count as down; at its own interval it is up, and its one missed beat is 5 minutes down."""
    from report.hosts import availability
    from report.window import window

    now = dt.datetime(2026, 1, 1, 2, 3, tzinfo=dt.timezone.utc)
    chosen = window("2h", None, now, None, 300)
    assert (chosen.period, chosen.heartbeat, chosen.start.minute, chosen.end.minute) == (60, 300, 0, 0)
    beats = {slot: 1.0 for slot in chosen.slots(300)}
    beats.pop(next(iter(chosen.slots(300))) + 3 * 300)
    found = availability(chosen, beats, None)
    assert found is not None and found.downtime_s == 300 and round(found.percent, 2) == 95.83  # 5 of 120 min
    per_minute = availability(window("2h", None, now), {slot: 1.0 for slot in chosen.slots(300)}, None)
    # From the first heartbeat in its window (00:05) to the minute after the last (01:56): 23 of 111 minutes.
    assert per_minute is not None and round(per_minute.percent, 2) == 20.72


def test_hosts_are_read_in_whole_host_chunks_of_at_most_500_queries() -> None:
    from report.build import host_chunks
    from report.hosts import Series, queries
    from report.window import Window

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    series = [Series(kind, f"i-{host:017x}", device, (("InstanceId", f"i-{host:017x}"), ("GPU", device)), kind)
              for host in range(50)
              for kind, device in [("heartbeat", ""), ("cpu", ""), *(("gpu", str(gpu)) for gpu in range(8))]]
    wanted = queries(series, "InfraWatch", Window(start, start + dt.timedelta(days=1), 60))
    chunks = list(host_chunks(series, wanted))
    sizes = [sum(len(wanted[item]) for item in chunk) for chunk in chunks]
    assert sizes == [26 * 19, 24 * 19]  # 26 hosts of 19 queries (1 + 2 + 8 × 2) fit in 500
    assert all(len({item.host for item in chunk}) * 10 == len(chunk) for chunk in chunks)  # whole hosts
