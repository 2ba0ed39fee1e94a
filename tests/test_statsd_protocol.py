"""The StatsD protocol cases of Telegraf's statsd tests, Etsy StatsD's docs and source, and DogStatsD's
datagram docs, each with what infrawatch publishes for it.

Sources: influxdata/telegraf `plugins/inputs/statsd/statsd_test.go` (the test named in each case),
statsd/statsd `docs/metric_types.md`, `stats.js` and `lib/helpers.js`, and Datadog's "DogStatsD
datagram format" page. A case is fed to a fresh collector (one 10-second collect), aggregated as the agent
does, and compared as published series -> {value: count}. Where infrawatch deliberately does otherwise
than the peer, `differs` says why (docs/statsd.md lists the same differences); every other case
publishes what the peer computes.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from agent.aggregate import Aggregator
from agent.catalogue import METRICS
from agent.statsd.collector import StatsdCollector
from tests.fakes.host import FakeClock

MINUTE_START = 1_790_000_040.0
LONG_KEY = "k" * 255  # CloudWatch's longest dimension name
KEYS = ("host", "environment", "endpoint", "env", "country", "city", "error", LONG_KEY)
CONTAINER = b"c:f76b5a1c03caa192580874b253c158010ade668cf03080a57aa8283919d56e75"

Published = dict[str, dict[float, float]]

# Why a case differs; docs/statsd.md explains each at length.
NO_RENAME = "names are published as sent, never rewritten: a line whose name CloudWatch would not take is refused"
INFLUX_TAGS = "tags in the name (Telegraf's Influx style) are not read: `,` is not a name character"
ETSY_SEGMENTS = "Etsy's multi-segment form (`:1|c:2|c`) is refused: it collides with DogStatsD's `|c:` field"
SIGNED = "a signed timer, histogram or set value is kept: CloudWatch takes it and Etsy StatsD keeps it too"
BAD_RATE = "an unreadable sample rate refuses the line (as Etsy StatsD does): the weight would be a guess"
NEGATIVE_TIMER = "a negative timer is kept: CloudWatch takes it, and dropping it would hide a job's clock bug"
ONE_RATE = "a second sample rate refuses the line: which one the client meant is a guess"
UNKNOWN_TYPE = "an unknown type refuses the line instead of counting it (Etsy counts it as a counter)"
TIMESTAMP = "a DogStatsD timestamp (`|T`) is skipped: the line counts in the minute it arrives"
EVENTS = "DogStatsD events and service checks are refused: CloudWatch metrics have no place for them"
NON_ASCII = "a non-ASCII dimension tag is dropped (and counted): CloudWatch takes ASCII dimension values only"


class Case(NamedTuple):
    source: str
    datagrams: tuple[bytes, ...]
    published: Published
    errors: int = 0
    differs: str = ""


def case(source: str, *datagrams: bytes, errors: int = 0, differs: str = "", **published: dict[float, float]) -> Case:
    return Case(source, datagrams, {name.replace("__", "."): counts for name, counts in published.items()}, errors,
                differs)


def one(value: float) -> dict[float, float]:
    return {value: 1.0}


def series(name: str, **tags: str) -> str:
    return name + "{" + ",".join(f"{key}={value}" for key, value in sorted(tags.items())) + "}"


T = "telegraf "
CASES = [
    # --- Telegraf: TestParse_ValidLines ---
    case(T + "ValidLines", b"valid:45|c", valid=one(45)),
    case(T + "ValidLines", b"valid:45|s", valid=one(1)),
    case(T + "ValidLines", b"valid:45|g", valid=one(45)),
    case(T + "ValidLines", b"valid.timer:45|ms", valid__timer=one(45)),
    case(T + "ValidLines", b"valid.timer:45|h", valid__timer=one(45)),
    # --- TestParse_Gauges ---
    case(T + "Gauges", b"plus.minus:100|g", b"plus.minus:-10|g", b"plus.minus:+30|g", plus__minus=one(120)),
    case(T + "Gauges", b"plus.plus:100|g", b"plus.plus:+100|g", b"plus.plus:+100|g", plus__plus=one(300)),
    case(T + "Gauges", b"minus.minus:100|g", b"minus.minus:-100|g", b"minus.minus:-100|g",
         minus__minus=one(-100)),
    case(T + "Gauges", b"lone.plus:+100|g", lone__plus=one(100)),
    case(T + "Gauges", b"lone.minus:-100|g", lone__minus=one(-100)),
    case(T + "Gauges", b"overwrite:100|g", b"overwrite:300|g", overwrite=one(300)),
    case(T + "Gauges", b"scientific.notation:4.696E+5|g", scientific__notation=one(469600)),
    case(T + "Gauges", b"scientific.notation.minus:4.7E-5|g", scientific__notation__minus=one(4.7e-5)),
    # --- TestParse_Sets ---
    case(T + "Sets", *[b"unique.user.ids:%s|s" % v for v in (b"100",) * 5 + (b"101", b"102", b"102", b"123456789")],
         unique__user__ids=one(4)),
    case(T + "Sets", b"oneuser.id:100|s", b"oneuser.id:100|s", oneuser__id=one(1)),
    case(T + "Sets", b"scientific.notation.sets:4.696E+5|s", b"scientific.notation.sets:4.696E+5|s",
         b"scientific.notation.sets:4.697E+5|s", scientific__notation__sets=one(2)),
    case(T + "Sets", b"string.sets:foobar|s", b"string.sets:foobar|s", b"string.sets:bar|s", string__sets=one(2)),
    # --- TestParse_Counters ---
    case(T + "Counters", b"small.inc:1|c", b"small.inc:1|c", small__inc=one(2)),
    case(T + "Counters", b"big.inc:100|c", b"big.inc:1|c", b"big.inc:100000|c", b"big.inc:1000000|c",
         big__inc=one(1100101)),
    case(T + "Counters", b"zero.init:0|c", zero__init=one(0)),
    case(T + "Counters", b"sample.rate:1|c|@0.1", b"sample.rate:1|c", sample__rate=one(11)),
    case(T + "Counters", b"scientific.notation:4.696E+5|c", scientific__notation=one(469600)),
    case(T + "Counters", b"negative.test:100|c", b"negative.test:-5|c", negative__test=one(95)),
    # --- TestParse_Timings, TestParse_Distributions, TestParseScientificNotation ---
    case(T + "Timings", *[b"test.timing:%d|ms" % v for v in (1, 11, 1, 1, 1)], test__timing={1.0: 4.0, 11.0: 1.0}),
    case(T + "Distributions", b"test.distribution:1|d", b"test.distribution2:2|d",
         test__distribution=one(1), test__distribution2=one(2)),
    *[case(T + "ScientificNotation", b"scientific.notation:4.6968460083008E-5|" + kind,
           scientific__notation=one(4.6968460083008e-5)) for kind in (b"ms", b"g", b"c", b"h")],
    # --- TestParse_InvalidLines ---
    *[case(T + "InvalidLines", line, errors=1) for line in (
        b"i.dont.have.a.pipe:45g", b"i.dont.have.a.colon45|c", b"invalid.metric.type:45|e",
        b"invalid.value:foobar|c", b"invalid.value:d11|c", b"invalid.value:1d1|c",
    )],
    case(T + "InvalidLines", b"invalid.plus.minus.non.gauge:+10|s", differs=SIGNED,
         invalid__plus__minus__non__gauge=one(1)),
    case(T + "InvalidLines", b"invalid.plus.minus.non.gauge:+10|ms", differs=SIGNED,
         invalid__plus__minus__non__gauge=one(10)),
    case(T + "InvalidLines", b"invalid.plus.minus.non.gauge:+10|h", differs=SIGNED,
         invalid__plus__minus__non__gauge=one(10)),
    # --- TestParse_InvalidSampleRate: a field that is no rate is skipped, a rate we cannot read refuses ---
    case(T + "InvalidSampleRate", b"invalid.sample.rate:45|c|0.1", invalid__sample__rate=one(45)),
    case(T + "InvalidSampleRate", b"invalid.sample.rate.2:45|c|@foo", errors=1, differs=BAD_RATE),
    case(T + "InvalidSampleRate", b"invalid.sample.rate:45|g|@0.1", invalid__sample__rate=one(45)),
    case(T + "InvalidSampleRate", b"invalid.sample.rate:45|s|@0.1", invalid__sample__rate=one(1)),
    # --- TestParse_DefaultNameParsing (the value; Telegraf also turns "." into "_") ---
    case(T + "DefaultNameParsing", b"valid.foo-bar:11|c", **{"valid.foo-bar": one(11)}),
    # --- TestParse_Tags, TestParse_MeasurementsWithSameName (Influx-style tags in the name) ---
    case(T + "Tags", b"cpu.idle,host=localhost:1|c", errors=1, differs=INFLUX_TAGS),
    case(T + "MeasurementsWithSameName", b"test.counter,host=localhost,region=west:1|c", errors=1,
         differs=INFLUX_TAGS),
    # --- TestParse_DataDogTags ---
    case(T + "DataDogTags", b"my_counter:1|c|#host:localhost,environment:prod,endpoint:/:tenant?/oauth/ro",
         **{series("my_counter", host="localhost", environment="prod", endpoint="/:tenant?/oauth/ro"): one(1)}),
    case(T + "DataDogTags", b"my_gauge:10.1|g|#live", my_gauge=one(10.1)),
    case(T + "DataDogTags", b"my_set:1|s|#host:localhost", **{series("my_set", host="localhost"): one(1)}),
    case(T + "DataDogTags", b"my_timer:3|ms|@0.1|#live,host:localhost",
         **{series("my_timer", host="localhost"): {3.0: 10.0}}),
    case(T + "DataDogTags", b"cpu:42|c|#", cpu=one(42)),
    # --- TestParse_DataDogContainerID (the container field is skipped) ---
    case(T + "DataDogContainerID", b"my_counter:1|c|#host:localhost|" + CONTAINER,
         **{series("my_counter", host="localhost"): one(1)}),
    case(T + "DataDogContainerID", b"my_gauge:10.1|g|#live|" + CONTAINER, my_gauge=one(10.1)),
    case(T + "DataDogContainerID", b"my_timer:3|ms|@0.1|#live,host:localhost|" + CONTAINER,
         **{series("my_timer", host="localhost"): {3.0: 10.0}}),
    case(T + "DataDogContainerID", b"cpu:42|c|#|" + CONTAINER, cpu=one(42)),
    # --- TestParse_MeasurementsWithMultipleValues ---
    case(T + "MeasurementsWithMultipleValues", b"valid.multiple:0|ms|", valid__multiple=one(0)),
    case(T + "MeasurementsWithMultipleValues", b"valid.multiple:0|ms|@0.1:0|ms|:1|ms", errors=1,
         differs=ETSY_SEGMENTS),
    *[case(T + "MeasurementsWithMultipleValues", b"valid.multiple.duplicate:1|%s:1|%s:2|%s:1|%s" % ((kind,) * 4),
           errors=1, differs=ETSY_SEGMENTS) for kind in (b"c", b"h", b"s", b"g")],
    case(T + "MeasurementsWithMultipleValues", b"valid.multiple.mixed:1|c:1|ms:2|s:1|g", errors=1,
         differs=ETSY_SEGMENTS),
    # --- TestParseSanitize (Telegraf's "upstream" renaming, as Etsy's keyNameSanitize) ---
    case(T + "ParseSanitize", b"regex.ARP flood stats:1|c", errors=1, differs=NO_RENAME),
    case(T + "ParseSanitize", b"regex.wow!!!:1|c", errors=1, differs=NO_RENAME),
    # --- TestParse_InvalidAndRecoverIntegration ---
    case(T + "InvalidAndRecoverIntegration", b"test.service.stat.missing_value:|h\n", b"cpu.time_idle:42|c\n",
         errors=1, cpu__time_idle=one(42)),
    # --- Etsy StatsD: docs/metric_types.md ---
    case("etsy metric_types.md", b"gorets:1|c", gorets=one(1)),
    case("etsy metric_types.md", b"gorets:1|c|@0.1", gorets=one(10)),
    case("etsy metric_types.md", b"glork:320|ms|@0.1", glork={320.0: 10.0}),
    case("etsy metric_types.md", b"gaugor:333|g", gaugor=one(333)),
    case("etsy metric_types.md", b"gaugor:333|g", b"gaugor:-10|g", b"gaugor:+4|g", gaugor=one(327)),
    case("etsy metric_types.md", b"uniques:765|s", uniques=one(1)),
    case("etsy metric_types.md", b"gorets:1|c\nglork:320|ms\ngaugor:333|g\nuniques:765|s",
         gorets=one(1), glork=one(320), gaugor=one(333), uniques=one(1)),
    # --- Etsy StatsD: stats.js and lib/helpers.js ---
    case("etsy stats.js", b"gorets:1|c\r\n", gorets=one(1)),  # the type is trim()med
    case("etsy stats.js", b"gorets:1|c|#env:prod", **{series("gorets", env="prod"): one(1)}),
    case("etsy stats.js", b"uniques:|s", uniques=one(1)),  # an empty member is a member
    case("etsy helpers.js", b"gorets:|c", errors=1),
    case("etsy helpers.js", b"gorets", errors=1),
    case("etsy helpers.js", b"gorets:1|c|@-0.1", errors=1),
    case("etsy helpers.js", b"gorets:1|c|@x", errors=1),
    case("etsy helpers.js", b"gaugor:x|g", errors=1),
    case("etsy helpers.js", b"glork:-5|ms", differs=NEGATIVE_TIMER, glork=one(-5)),
    case("etsy helpers.js", b"gorets:1|c|@0.5|@0.1", errors=1, differs=ONE_RATE),
    case("etsy stats.js", b"gorets:1|x", errors=1, differs=UNKNOWN_TYPE),
    # --- DogStatsD datagram format ---
    case("dogstatsd docs", b"page.views:1|c", page__views=one(1)),
    case("dogstatsd docs", b"fuel.level:0.5|g", fuel__level=one(0.5)),
    case("dogstatsd docs", b"song.length:240|h|@0.5", song__length={240.0: 2.0}),
    case("dogstatsd docs", b"users.uniques:1234|s", users__uniques=one(1)),
    case("dogstatsd docs", b"users.online:1|c|#country:china", **{series("users.online", country="china"): one(1)}),
    case("dogstatsd docs", b"users.online:1|c|@0.5|#country:china",
         **{series("users.online", country="china"): one(2)}),
    case("dogstatsd docs v1.1", b"song.length:240:180|h|@0.5", song__length={180.0: 2.0, 240.0: 2.0}),
    case("dogstatsd docs v1.1", b"name:1:2:3|ms|@0.5", name={1.0: 2.0, 2.0: 2.0, 3.0: 2.0}),
    case("dogstatsd docs v1.1", b"page.views:1:2:3|c|#env:prod", **{series("page.views", env="prod"): one(6)}),
    case("dogstatsd docs v1.2", b"page.views:1|c|" + CONTAINER, page__views=one(1)),
    case("dogstatsd docs v1.3", b"page.views:15|c|T1656581400", differs=TIMESTAMP, page__views=one(15)),
    case("dogstatsd docs", b"_e{5,4}:title|text|#env:prod", errors=1, differs=EVENTS),
    case("dogstatsd docs", b"_sc|db.ok|0|#env:prod", errors=1, differs=EVENTS),
    # --- What real clients send (issue 12, issue 19) ---
    case("datadog agent", b"cpu:42|c|#env:prod,", **{series("cpu", env="prod"): one(42)}),
    case("datadog agent", b"cpu:42|c|#env:prod,,error:x", **{series("cpu", env="prod", error="x"): one(42)}),
    case("hot-shots", b"api.latency:251|ms|#error:connection refused",
         **{series("api.latency", error="connection refused"): one(251)}),
    case("node-statsd", b"jobs.done:1|c|#env=prod", **{series("jobs.done", env="prod"): one(1)}),
    case("dogstatsd client", "orders:1|c|#country:ch,city:zürich".encode(), errors=1, differs=NON_ASCII,
         **{series("orders", country="ch"): one(1)}),
    case("datadog agent", b"a:1|c\r\nb:2|ms\r\n", a=one(1), b=one(2)),
    case("etsy metric_types.md", b"gorets:1|c|@1", gorets=one(1)),
    case("dogstatsd docs", b"a:1|c|#" + LONG_KEY.encode() + b":v", **{series("a", **{LONG_KEY: "v"}): one(1)}),
    case("dogstatsd docs", b"step:7|h|@0.001", step={7.0: 1000.0}),
    case("dogstatsd client", *[b"step:%d|h|@%r" % (v, 10 / 37) for v in range(10)],
         step={float(v): 1 / (10 / 37) for v in range(10)}),
]


def published(datagrams: tuple[bytes, ...]) -> tuple[Published, int]:
    """What one collect of these datagrams publishes, as aggregated for CloudWatch; and the parse errors."""
    clock = FakeClock()
    statsd = StatsdCollector(monotonic=clock, dimension_keys=KEYS)
    for datagram in datagrams:
        statsd.receive(datagram)
    clock.advance(10)
    aggregator = Aggregator()
    aggregator.add(statsd.collect(), MINUTE_START)
    out: Published = {}
    errors = 0
    for datum in aggregator.drain():
        if datum.name == "StatsdParseErrors":
            errors = int(datum.values[0])
        elif datum.name not in METRICS and not datum.name.endswith("PerSecond"):
            name = series(datum.name, **dict(datum.dimensions)) if datum.dimensions else datum.name
            out[name] = dict(zip(datum.values, datum.counts, strict=True))
    return out, errors


@pytest.mark.parametrize(
    "case", CASES,
    ids=[f"{c.source}: {c.datagrams[0][:48]!r}{' [differs]' if c.differs else ''}" for c in CASES],
)
def test_protocol_case(case: Case) -> None:
    assert published(case.datagrams) == (case.published, case.errors)

