"""AWS access: boto3 clients from the standard SDK configuration; one rate limit and retry policy.

Clients come from a boto3 session, so region, credentials and `AWS_ENDPOINT_URL` follow the SDK's usual
configuration. botocore's own retries are off: `Caller` is the one place that retries (tenacity, throttling
and transient errors only, as `agent.cloudwatch_rules` classifies them) and paces writes to CloudWatch's
per-operation quotas.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import structlog
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from agent.cloudwatch_rules import error_code, is_retryable
from agent.host import region_source, sdk_region
from agent.logs import LogOnce

log = structlog.get_logger()

# CloudWatch's default per-account quotas, in requests per second.
DEFAULT_RATES: Mapping[str, float] = {
    "PutMetricAlarm": 3.0,
    "DeleteAlarms": 3.0,
    "DescribeAlarms": 9.0,
    "PutDashboard": 10.0,
    "GetDashboard": 10.0,
    "ListDashboards": 10.0,
    "DeleteDashboards": 10.0,
}
ALARM_WRITES = ("PutMetricAlarm", "DeleteAlarms")

# Operations an emulator may lack (moto has no PutCompositeAlarm). What such an endpoint answers: moto's server an
# HTTP 500 without an AWS error code (CloudWatch's own 5xx always carry one: InternalFailure, ServiceUnavailable),
# other emulators NotImplemented or InvalidAction. That answer is final, never retried.
OPTIONAL_OPERATIONS = frozenset({"PutCompositeAlarm"})
NOT_IMPLEMENTED_CODES = frozenset({"NotImplemented", "InvalidAction", "UnknownOperationException", "500", "501"})
MAX_ATTEMPTS = 8  # with the backoff below, about a minute before a call is given up
# An endpoint nobody answers on (connection refused, or no connection within CONNECT_TIMEOUT_S) is given up
# after this many attempts: the backoff waits at most 0.5 + 1 + 2 + 4 = 7.5 s between them, so the command
# says so within 15 s of a connection refused instead of retrying for a minute.
UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError)
UNREACHABLE_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 3

def unreachable_message(error: Exception, client: Any) -> str:
    """One line for a command whose endpoint did not answer: which endpoint, which region and where it came
    from, and the two settings that change them."""
    endpoint = getattr(error, "kwargs", {}).get("endpoint_url") or client.meta.endpoint_url
    return (f"could not reach {endpoint} (region {client.meta.region_name}, from {region_source()}): {error}. "
            "Set AWS_ENDPOINT_URL for a local endpoint such as a moto server, AWS_REGION for another region.")


CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=CONNECT_TIMEOUT_S)


class Clients:
    """One client per service, created on first use from `session`."""

    def __init__(self, session: boto3.Session | None = None, config: Config = CLIENT_CONFIG) -> None:
        self._session = session if session is not None else boto3.Session(region_name=sdk_region())
        self._config = config
        self._clients: dict[str, Any] = {}

    def __getitem__(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, config=self._config)
        return self._clients[service]


class RateLimiter:
    """Spaces calls of each limited operation at least 1/rate seconds apart; other operations pass."""

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._sleep = sleep
        self._next: dict[str, float] = {}

    def wait(self, operation: str) -> None:
        rate = self._rates.get(operation)
        if rate is None:
            return
        now = self._clock()
        start = max(now, self._next.get(operation, now))
        if start > now:
            self._sleep(start - now)
        self._next[operation] = start + 1.0 / rate


class Caller:
    """Calls `service.operation(**params)` paced by the rate limiter, retrying throttling with backoff."""

    def __init__(
        self,
        clients: Clients,
        limiter: RateLimiter,
        *,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.clients = clients
        self._limiter = limiter
        self._sleep = sleep
        self._attempts = attempts
        self._warn = LogOnce(log)

    def _stop(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        attempts = UNREACHABLE_ATTEMPTS if isinstance(error, UNREACHABLE) else self._attempts
        return state.attempt_number >= min(attempts, self._attempts)

    def __call__(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.clients[service], xform_name(operation))

        def retryable(error: BaseException) -> bool:
            return is_retryable(error) and not (operation in OPTIONAL_OPERATIONS and not_implemented(error))

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=self._stop,
            wait=wait_random_exponential(multiplier=0.5, max=20),  # full jitter
            sleep=self._sleep,
            before_sleep=lambda state: self._retrying(operation, state),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._limiter.wait(operation)
                result: dict[str, Any] = method(**params)
        return result

    def pages(self, service: str, operation: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a NextToken-paginated operation."""
        token = None
        while True:
            page = self(service, operation, **params, **({"NextToken": token} if token else {}))
            yield page
            token = page.get("NextToken")
            if not token:
                return

    def _retrying(self, operation: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        code = error_code(error) if isinstance(error, Exception) else "unknown"
        self._warn.warning((operation, code), "aws_call_retried", operation=operation, error_code=code)


def not_implemented(error: BaseException) -> bool:
    """The endpoint does not have the operation (moto in process raises NotImplementedError)."""
    return isinstance(error, NotImplementedError) or (
        isinstance(error, ClientError) and error_code(error) in NOT_IMPLEMENTED_CODES
    )


@dataclass(frozen=True)
class Account:
    """Where the stack lives: ARNs are built from it before the resources exist."""

    id: str
    region: str
    partition: str

    @classmethod
    def lookup(cls, caller: Caller, known_arn: str = "") -> Account:
        """From `known_arn` (an ARN of this account and region already read: every alarm's carries the account
        and partition), else from GetCallerIdentity."""
        region = caller.clients["cloudwatch"].meta.region_name
        if known_arn:
            parts = known_arn.split(":")
            return cls(id=parts[4], region=region, partition=parts[1])
        identity = caller("sts", "GetCallerIdentity")
        return cls(id=identity["Account"], region=region, partition=identity["Arn"].split(":")[1])

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.id}:{resource}"
