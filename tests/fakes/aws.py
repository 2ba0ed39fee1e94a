"""Running provision-alarms against moto with every AWS call counted through botocore's own event hooks."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.loaders
import botocore.session

from provisioning.aws import CLIENT_CONFIG, Clients
from provisioning.cli import main
from tests.fakes.host import FakeClock

# An Amazon image in moto's catalogue (moto/ec2/resources/amis.json). Asked for by ID: listing the whole
# catalogue (1,366 images) to take the first costs moto about a second per call.
MOTO_IMAGE = "ami-03cf127a"


def an_image(ec2: Any) -> str:
    """The ID of an image EC2 (moto) knows, to launch instances from."""
    return str(ec2.describe_images(ImageIds=[MOTO_IMAGE])["Images"][0]["ImageId"])


WRITE_VERBS = ("Put", "Create", "Delete", "Set", "Tag", "Untag", "Remove", "Subscribe", "Unsubscribe", "Publish")


def is_write(operation: str) -> bool:
    return operation.startswith(WRITE_VERBS)


class CallRecorder:
    """Every API call any client of `session` makes, by operation name, from the `before-call` event."""

    def __init__(self, session: boto3.Session) -> None:
        self.calls: list[str] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (operation, parameters as the caller passed them)
        session.events.register("before-call", self._record)
        session.events.register("before-parameter-build", self._record_parameters)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)

    def _record_parameters(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests.append((model.name, dict(params)))

    @property
    def writes(self) -> Counter[str]:
        return Counter(call for call in self.calls if is_write(call))

    @property
    def write_requests(self) -> list[tuple[str, dict[str, Any]]]:
        """Every write call with its parameters, in order."""
        return [(operation, params) for operation, params in self.requests if is_write(operation)]

    def clear(self) -> None:
        self.calls.clear()
        self.requests.clear()


MAX_ALARMS_PER_PAGE = 100  # DescribeAlarms' MaxRecords: 1..100 in the service model


class AlarmPages:
    """DescribeAlarms paged as CloudWatch pages it: at most MaxRecords alarms (metric, then composite) a response,
    with a NextToken for the rest. moto answers every alarm in one response, which hides the page count a rerun
    pays on CloudWatch. Each page is a call of its own (seen by `before-call` counters registered earlier); the
    alarms come from `backend`, a client outside `session` (not counted), asked for everything once per page."""

    def __init__(self, session: boto3.Session, backend: Any) -> None:
        self._backend = backend
        self._params: dict[str, Any] = {}
        session.events.register("before-parameter-build.cloudwatch.DescribeAlarms", self._remember)
        session.events.register_last("before-call", self._page)  # after the counters: each page is counted

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self._params = dict(params)

    def _page(self, model: Any, **_: Any) -> Any:
        if model.name != "DescribeAlarms":
            return None
        params = {key: value for key, value in self._params.items() if key not in ("NextToken", "MaxRecords")}
        found = self._backend.describe_alarms(**params)  # moto: every alarm, no NextToken
        alarms = [("MetricAlarms", item) for item in found.get("MetricAlarms", [])]
        alarms += [("CompositeAlarms", item) for item in found.get("CompositeAlarms", [])]
        start = int(self._params.get("NextToken", "0"))
        end = start + int(self._params.get("MaxRecords", MAX_ALARMS_PER_PAGE))
        page: dict[str, Any] = {"MetricAlarms": [], "CompositeAlarms": [], "ResponseMetadata": {"HTTPStatusCode": 200}}
        for key, item in alarms[start:end]:
            page[key].append(item)
        if end < len(alarms):
            page["NextToken"] = str(end)

        class Response:
            status_code = 200

        return Response(), page


DASHBOARD_OPERATIONS = ("put_dashboard", "get_dashboard", "list_dashboards", "delete_dashboards")


class _GlobalDashboards:
    """A regional CloudWatch client whose dashboard calls all reach one store, as in CloudWatch."""

    def __init__(self, regional: Any, global_store: Any) -> None:
        self._regional = regional
        self._global = global_store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._global if name in DASHBOARD_OPERATIONS else self._regional, name)


class GlobalDashboardClients(Clients):
    """Clients for one region whose dashboards are the account's, wherever they are called from.

    CloudWatch dashboards are global to the account (PutDashboard API reference), but moto keeps them per
    region; every region's dashboard calls go to moto's us-east-1 store here, so two regions share them.
    """

    def __init__(self, session: boto3.Session) -> None:
        super().__init__(session)
        self._dashboard_session = session
        self._cloudwatch: _GlobalDashboards | None = None

    def __getitem__(self, service: str) -> Any:
        if service != "cloudwatch":
            return super().__getitem__(service)
        if self._cloudwatch is None:  # created on first use, like every client, so they see the test's hooks
            store = self._dashboard_session.client("cloudwatch", region_name="us-east-1", config=CLIENT_CONFIG)
            self._cloudwatch = _GlobalDashboards(super().__getitem__(service), store)
        return self._cloudwatch


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    @property
    def warnings(self) -> list[str]:
        """The pre-flight warnings on stderr (series without data, devices left out)."""
        return [line for line in self.err.splitlines() if line.startswith("warning: ")]

    @property
    def errors(self) -> list[str]:
        """stderr without the warnings: problems and logs."""
        return [line for line in self.err.splitlines() if not line.startswith("warning: ")]


# botocore parses a service's model (EC2's is megabytes of JSON) once per session, and every Provisioner is
# a new session: one loader for the run keeps the parsed models, as botocore's own cache does in a session.
_MODELS = botocore.loaders.create_loader()


def session_with_shared_models(region: str) -> boto3.Session:
    """A new boto3 session (its own events, credentials and clients) whose models come from `_MODELS`."""
    core = botocore.session.Session()
    core.register_component("data_loader", _MODELS)
    session = boto3.Session(botocore_session=core, region_name=region)
    # boto3 appends its own data directory to the loader's search path for every session: once is enough.
    _MODELS.search_paths[:] = list(dict.fromkeys(_MODELS.search_paths))
    return session


class Provisioner:
    """`provision-alarms` in-process against moto (call inside `mock_aws`), never sleeping, calls recorded."""

    def __init__(self, directory: Path, region: str = "us-east-1") -> None:
        self.session = session_with_shared_models(region)
        self.recorder = CallRecorder(self.session)
        AlarmPages(self.session, boto3.Session(region_name=region).client("cloudwatch", config=CLIENT_CONFIG))
        self.clients = GlobalDashboardClients(self.session)
        self.clock = FakeClock()
        self._spec = directory / "alarms.toml"

    def client(self, service: str) -> Any:
        """A client for checking state; its calls are recorded too, so clear the recorder after using it."""
        return self.clients[service]

    def run(self, spec: str, *args: str, confirm: Callable[[str], bool] | None = None) -> Run:
        self._spec.write_text(spec)
        self.recorder.clear()
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["--config", str(self._spec), *args],
            clients=self.clients, clock=self.clock, sleep=self.clock.sleep, confirm=confirm, out=out, err=err,
        )
        return Run(code, out.getvalue(), err.getvalue())
