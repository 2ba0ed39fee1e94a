"""naming = "cwagent": the Amazon CloudWatch agent's series, with its names, units, dimension keys and numbers.

Expected values come from the agent's own source (telegraf's cpu, mem, disk and netstat inputs as its
fork runs them, gopsutil's meminfo and /dev/root handling, its nvidia_smi schema v12 parser and tag deny
list, its roll-up code), computed by hand below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from structlog.testing import capture_logs

from agent.aggregate import Aggregator, Datum
from agent.catalogue import METRICS
from agent.cli import build_collectors
from agent.collectors import Collector, mounts
from agent.collectors.blockdev import BlockDeviceNames
from agent.collectors.cpu import CpuCollector
from agent.collectors.cwagent_cpu import CwagentCpuCollector
from agent.collectors.diskio import DiskIOCollector
from agent.collectors.gpu import GpuCollector
from agent.collectors.memory import MemoryCollector
from agent.collectors.netstat import NetstatCollector
from agent.collectors.network import NetworkCollector
from agent.collectors.storage import StorageCollector
from agent.config import DEFAULT_IGNORED_FSTYPES, parse
from agent.cwagent import BY_NAME, CWA_METRICS
from agent.docs import ROOT
from agent.fake_nvml import FakeNvml, a10g, h100, healthy_h100
from agent.filters import NameFilter
from agent.fleet import DimensionPlan
from agent.loop import Agent
from agent.naming import CWAGENT, Namer, published_dimensions
from agent.nvml import Nvml
from agent.samples import Sample
from agent.selfstats import AgentStats
from tests.fakes.host import (
    TRAINING_HOST_MOUNTS,
    TRAINING_HOST_STATVFS,
    DiskCounters,
    FakeClock,
    NicCounters,
    Sequence,
    StatVfs,
    SwapMemory,
    VirtualMemory,
    statvfs_from,
)

GIB = 2**30

# /proc/stat twice, 1 s apart. Host-wide Δ: user 30 (of which guest 10), system 10, idle 40, iowait 15,
# steal 5: total 100 (guest is inside user). cpu0's Δ: user 20 (guest 10), system 5, idle 60, iowait 10,
# steal 5. cpu3 is offline, so the next core is cpu5; its Δ: user 10, system 5, idle 80, iowait 5.
STAT_BEFORE = """cpu  100 0 50 500 20 0 0 5 0 0
cpu0 50 0 25 250 10 0 0 2 0 0
cpu5 50 0 25 250 10 0 0 3 0 0
intr 12345 0 0
ctxt 999
"""
STAT_AFTER = """cpu  130 0 60 540 35 0 0 10 10 0
cpu0 70 0 30 310 20 0 0 7 10 0
cpu5 60 0 30 330 15 0 0 3 0 0
intr 12399 0 0
ctxt 1999
"""

# 64 GiB host with 40 GiB in /dev/shm: Shmem sits in Cached (psutil's and gopsutil's cached add
# SReclaimable), and MemAvailable leaves it out because shared memory cannot be reclaimed.
SHM_HEAVY = VirtualMemory(total=64 * GIB, available=12 * GIB, free=4 * GIB, buffers=1 * GIB, cached=50 * GIB)
NO_SWAP = SwapMemory(0, 0)

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11111 1 0 100 0 0 10 0
   1: 0A00020F:D2F0 0A000001:01BB 01 00000000:00000000 02:000A7D6B 00000000  1000        0 22222 2 0 20 4 30 10 -1
   2: 0A00020F:D2F2 0A000001:01BB 06 00000000:00000000 03:00000F3A 00000000     0        0 0 3 0
   3: 0A00020F:D2F4 0A000001:01BB 01 00000000:00000000 02:000A7D6B 00000000  1000        0 33333 2 0 20 4 30 10 -1
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 44444 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000A00020F:0016 0000000000000000FFFF00000A000001:C3A2 01 00000000:00000000 02:00051F2E 00000000     0        0 55555 4 0 20 4 29 10 -1
"""  # noqa: E501 - /proc/net/tcp6 lines as the kernel writes them


def fake_proc(root: Path, tcp6: bool = True) -> Path:
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(TCP)
    if tcp6:
        (root / "net" / "tcp6").write_text(TCP6)
    return root


def stat_device(major: int, minor: int) -> os.stat_result:
    """What stat() of a mount point says: st_dev is the filesystem's MAJ:MIN (mountinfo's third field)."""
    return os.stat_result((0o40755, 2, os.makedev(major, minor), 1, 0, 0, 4096, 0, 0, 0))


def fake_sys(root: Path, *, link: bool = True) -> Path:
    """A /sys with the root partition's /sys/dev/block entry: a link, as the kernel makes it, or (some
    container runtimes) a directory with the device's uevent."""
    block = root / "dev" / "block"
    block.mkdir(parents=True)
    if link:
        (block / "259:1").symlink_to("../../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p1")
    else:
        (block / "259:1").mkdir()
        (block / "259:1" / "uevent").write_text("MAJOR=259\nMINOR=1\nDEVNAME=nvme0n1p1\nDEVTYPE=partition\n")
    return root


def values(samples: list[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(sample.name, sample.dimensions): sample.value for sample in samples}


# --- formulas ---------------------------------------------------------------------------------------


def test_mem_used_percent_is_the_agents_formula_where_shared_memory_counts_as_not_used() -> None:
    def memory(formulas: str) -> list[Sample]:
        return MemoryCollector(formulas=formulas,  # type: ignore[arg-type]
                               virtual_memory=lambda: SHM_HEAVY, swap_memory=lambda: NO_SWAP).collect()

    # (64 − 4 − 1 − 50) / 64 = 14.0625 %; native (64 − 12) / 64 = 81.25 %: 43 GiB apart.
    assert memory("cwagent") == [METRICS["MemoryUtilization"].sample(14.0625),
                                 METRICS["MemoryAvailable"].sample(12 * GIB),
                                 METRICS["SwapUtilization"].sample(0.0)]  # gopsutil: 0 without swap
    assert memory("native") == [METRICS["MemoryUtilization"].sample(81.25),
                                METRICS["MemoryAvailable"].sample(12 * GIB)]  # no swap: absent, not zero


def test_an_iowait_going_backwards_counts_zero_and_no_share_is_negative() -> None:
    before = "cpu  1234500 310 456700 98765400 23400 0 12300 4500 0 0\n"
    after = "cpu  1235700 310 457100 98767600 23000 0 12400 4600 0 0\n"  # iowait 23400 -> 23000
    collector = CwagentCpuCollector(read_stat=Sequence(before, after))
    collector.collect()
    # Deltas: user 1200, system 400, idle 2200, iowait 0 (not -400), softirq 100, steal 100: total 4000.
    assert values(collector.collect()) == {
        ("CPUUtilization", ()): 1800 / 4000 * 100, ("CPUIdle", ()): 2200 / 4000 * 100, ("CPUIOWait", ()): 0.0,
        ("CPUUser", ()): 1200 / 4000 * 100, ("CPUSystem", ()): 400 / 4000 * 100, ("CPUSteal", ()): 100 / 4000 * 100,
    }


def test_cpu_usage_is_telegrafs_with_iowait_active_and_cores_named_by_the_kernel() -> None:
    collector = CwagentCpuCollector(per_core=True, read_stat=Sequence(STAT_BEFORE, STAT_AFTER))
    assert collector.collect() == []  # the first reading only primes
    assert values(collector.collect()) == {
        ("CPUUtilization", ()): 60.0,  # 100 − idle 40: iowait counts as active
        ("CPUIdle", ()): 40.0,
        ("CPUIOWait", ()): 15.0,
        ("CPUUser", ()): 20.0,  # user 30 less guest 10
        ("CPUSystem", ()): 10.0,
        ("CPUSteal", ()): 5.0,
        ("CPUCoreUtilization", (("Core", "0"),)): 40.0,  # per core: no steal series (host-wide only)
        ("CPUCoreIdle", (("Core", "0"),)): 60.0,
        ("CPUCoreIOWait", (("Core", "0"),)): 10.0,
        ("CPUCoreUser", (("Core", "0"),)): 10.0,
        ("CPUCoreSystem", (("Core", "0"),)): 5.0,
        ("CPUCoreUtilization", (("Core", "5"),)): 20.0,
        ("CPUCoreIdle", (("Core", "5"),)): 80.0,
        ("CPUCoreIOWait", (("Core", "5"),)): 5.0,
        ("CPUCoreUser", (("Core", "5"),)): 10.0,
        ("CPUCoreSystem", (("Core", "5"),)): 5.0,
    }


def test_native_cpu_utilization_keeps_leaving_iowait_out() -> None:
    from tests.fakes.host import cpu

    native = CpuCollector(cpu_times=Sequence(cpu(user=100, system=50, idle=500, iowait=20, steal=5),
                                             cpu(user=130, system=60, idle=540, iowait=35, steal=10, guest=10)))
    native.collect()
    assert values(native.collect())[("CPUUtilization", ())] == 45.0  # the same Δ as above: 60 under cwagent


def test_disk_io_time_is_the_busy_milliseconds_of_each_collection() -> None:
    clock = FakeClock()
    counters = Sequence({"nvme0n1": DiskCounters(0, 0, 0, 0, busy_time=1_000)},
                        {"nvme0n1": DiskCounters(0, 0, 0, 0, busy_time=1_350)})
    collector = DiskIOCollector(io_time=True, disk_io_counters=counters, whole_disks=lambda: {"nvme0n1"},
                                monotonic=clock)
    collector.collect()
    clock.advance(10)
    assert values(collector.collect())[("DiskIOTime", (("Device", "nvme0n1"),))] == 350.0
    namer = Namer("cwagent", collect_interval=10)
    datum = Datum("DiskIOTime", (("Device", "nvme0n1"),), 0.0, "Milliseconds", (350.0,), (1.0,))
    assert namer.datum(datum) == Datum("diskio_io_time", (("name", "nvme0n1"),), 0.0, "Milliseconds",
                                       (350.0,), (1.0,))  # a delta already: not scaled by the interval


def test_tcp_states_count_ipv4_and_ipv6_sockets(tmp_path: Path) -> None:
    assert NetstatCollector(proc=fake_proc(tmp_path / "a")).collect() == [
        METRICS["TCPEstablished"].sample(3), METRICS["TCPTimeWait"].sample(1)]
    # A kernel without IPv6 has no tcp6 table: its IPv4 sockets still count.
    assert NetstatCollector(proc=fake_proc(tmp_path / "b", tcp6=False)).collect() == [
        METRICS["TCPEstablished"].sample(2), METRICS["TCPTimeWait"].sample(1)]
    with pytest.raises(FileNotFoundError, match="none of net/tcp, net/tcp6"):
        NetstatCollector(proc=tmp_path / "none").collect()


# --- dimensions -------------------------------------------------------------------------------------


# Root mounted from the kernel command line (/dev/root), a data volume, an LVM volume.
ROOT_HOST = mounts.parse(
    "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard\n"
    "23 22 259:4 / /data rw,noatime shared:2 - xfs /dev/nvme1n1 rw,attr2,inode64,noquota\n"
    "24 22 253:0 / /scratch rw,relatime shared:3 - ext4 /dev/mapper/vg0-scratch rw\n"
)
ROOT_STATVFS = {"/": StatVfs(4096, 1_000_000, 400_000, 350_000, 65_536, 16_384),
                "/data": StatVfs(4096, 2_000_000, 1_500_000, 1_500_000, 0, 0),
                "/scratch": StatVfs(4096, 100, 50, 50, 1_000, 900)}


def storage_devices(names: BlockDeviceNames) -> dict[str, str]:
    collector = StorageCollector(device_dimensions=True, device_names=names, mount_table=lambda: ROOT_HOST,
                                 statvfs=statvfs_from(ROOT_STATVFS))
    return {dict(s.dimensions)["MountPath"]: dict(s.dimensions)["Device"] for s in collector.collect()}


@pytest.mark.parametrize("link", [True, False], ids=["sysfs link", "uevent DEVNAME"])
def test_dev_root_is_resolved_to_the_real_block_device(tmp_path: Path, link: bool) -> None:
    names = BlockDeviceNames(sys_root=fake_sys(tmp_path, link=link), stat=lambda path: stat_device(259, 1))
    assert storage_devices(names) == {"/": "nvme0n1p1", "/data": "nvme1n1", "/scratch": "mapper/vg0-scratch"}


def test_dev_root_that_sysfs_cannot_resolve_stays_root_and_is_said_once(tmp_path: Path) -> None:
    names = BlockDeviceNames(sys_root=tmp_path, stat=lambda path: stat_device(259, 1))
    with capture_logs() as logs:
        assert storage_devices(names)["/"] == "root"
        assert storage_devices(names)["/"] == "root"
    assert [(log["event"], log["mount"]) for log in logs] == [("root_device_unresolved", "/")]


def test_disk_inodes_free_is_statvfs_free_files_with_the_disk_dimensions() -> None:
    collector = StorageCollector(device_dimensions=True, inodes_free=True,
                                 fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                                 mount_table=lambda: TRAINING_HOST_MOUNTS,
                                 statvfs=statvfs_from(TRAINING_HOST_STATVFS))
    inodes = {s.dimensions: s.value for s in collector.collect() if s.name == "StorageInodesFree"}
    assert inodes == {
        (("Device", "nvme0n1p1"), ("FSType", "ext4"), ("MountPath", "/")): 16_384,
        (("Device", "nvme1n1"), ("FSType", "xfs"), ("MountPath", "/data")): 0,  # no inode table: 0, as gopsutil
    }


def test_gpu_architecture_is_nvidia_smis_string_and_unknown_is_left_out() -> None:
    unknown = h100(2)
    unknown.architecture = pynvml.NVML_DEVICE_ARCH_UNKNOWN
    nvml = Nvml(FakeNvml([h100(0), a10g(1), unknown]))
    assert [nvml.architecture(gpu) for gpu in range(3)] == ["Hopper", "Ampere", None]
    assert Nvml(FakeNvml([h100(0)], missing_functions=frozenset({"nvmlDeviceGetArchitecture"}))).architecture(0) is None
    collector = GpuCollector(nvml, name_dimension=True, arch_dimension=True)
    try:
        dims = {dict(s.dimensions).get("GPU"): dict(s.dimensions) for s in collector.collect() if s.dimensions}
    finally:
        collector.close()
    assert dims == {
        "0": {"GPU": "0", "GPUName": "NVIDIA H100 80GB HBM3", "GPUArch": "Hopper"},
        "1": {"GPU": "1", "GPUName": "NVIDIA A10G", "GPUArch": "Ampere"},
        "2": {"GPU": "2", "GPUName": "NVIDIA H100 80GB HBM3"},
    }


def run_agent(collectors: list[Collector], clock: FakeClock, **plan: object) -> list[Datum]:
    """Two collections 10 s apart through the agent's own pipeline under cwagent, then one flush."""
    namer = Namer("cwagent", collect_interval=10)
    published: list[Datum] = []
    agent = Agent(collectors=collectors, aggregator=Aggregator(publish_as=namer.datum), stats=AgentStats(),
                  submit=published.extend, sample_as=namer.sample, wall_clock=lambda: 1_790_000_000.0,
                  plan=DimensionPlan(identity={"InstanceId": "i-0abc", "InstanceType": "p5.48xlarge"},
                                     hostname="gpu-7", wall_clock=lambda: 1_790_000_000.0, **plan))  # type: ignore[arg-type]
    agent.collect()
    clock.advance(10)
    agent.collect()
    agent.flush()
    return published


def test_roll_ups_keep_only_the_dimensions_they_list() -> None:
    clock = FakeClock()
    datums = run_agent([CwagentCpuCollector(read_stat=Sequence(STAT_BEFORE, STAT_AFTER))], clock,
                       aggregate=[["InstanceId"], ["InstanceType"]], rollup_metrics=["CPUUtilization"])
    assert sorted(d.dimensions for d in datums if d.name == "cpu_usage_active") == [
        (("InstanceId", "i-0abc"),),  # as the agent's ProcessRollup: fewer dimensions than the series
        (("InstanceId", "i-0abc"), ("cpu", "cpu-total")),
        (("InstanceType", "p5.48xlarge"),),  # no cpu=cpu-total
    ]


# --- every CloudWatch agent metric --------------------------------------------------------------------


@pytest.fixture()
def cwagent_host(tmp_path: Path) -> Iterator[tuple[list[Collector], FakeClock]]:
    """Every collector as build_collectors makes it under cwagent (with cpu.per_core), on fakes."""
    clock = FakeClock()
    gpu = GpuCollector(Nvml(healthy_h100(2, clock=clock)), name_dimension=True, arch_dimension=True,
                       monotonic=clock)
    disks = Sequence(*({"nvme0n1": DiskCounters(n * 1000, n * 2000, n * 10, n * 20, busy_time=n * 300)}
                       for n in (1, 2)))
    nics = Sequence(*({"ens32": NicCounters(n * 5000, n * 4000, n * 50, n * 40)} for n in (1, 2)))
    collectors: list[Collector] = [
        CwagentCpuCollector(per_core=True, read_stat=Sequence(STAT_BEFORE, STAT_AFTER)),
        MemoryCollector(formulas="cwagent", virtual_memory=lambda: SHM_HEAVY, swap_memory=lambda: NO_SWAP),
        StorageCollector(device_dimensions=True, inodes_free=True, fstypes=NameFilter(exclude=DEFAULT_IGNORED_FSTYPES),
                         mount_table=lambda: TRAINING_HOST_MOUNTS,
                         statvfs=statvfs_from(TRAINING_HOST_STATVFS)),
        DiskIOCollector(io_time=True, disk_io_counters=disks, whole_disks=lambda: {"nvme0n1"}, monotonic=clock),
        NetworkCollector(net_io_counters=nics, monotonic=clock),
        NetstatCollector(proc=fake_proc(tmp_path)),
        gpu,
    ]
    try:
        yield collectors, clock
    finally:
        gpu.close()


def test_every_published_cloudwatch_agent_metric_arrives_with_its_name_unit_and_dimension_keys(
    cwagent_host: tuple[list[Collector], FakeClock],
) -> None:
    collectors, clock = cwagent_host
    datums = run_agent(collectors, clock)
    published = {(d.name, d.unit, tuple(sorted(dict(d.dimensions)))) for d in datums}
    expected = {(m.name, m.unit, tuple(sorted(["InstanceId", *m.dimensions]))) for m in CWA_METRICS if not m.omitted}
    assert expected <= published
    # No other key set under an agent's name (no uuid, no host beside InstanceId, no native key left).
    assert {entry for entry in published if entry[0] in BY_NAME} == expected
    # Every other series keeps a catalogue name: nothing is published under a name the agent uses otherwise.
    assert {name for name, _, _ in published} - set(BY_NAME) <= set(METRICS)
    by_series = {(d.name, d.dimensions): d.values for d in datums}
    assert by_series[("mem_used_percent", (("InstanceId", "i-0abc"),))] == (14.0625,)
    assert by_series[("swap_used_percent", (("InstanceId", "i-0abc"),))] == (0.0,)
    assert by_series[("cpu_usage_active", (("InstanceId", "i-0abc"), ("cpu", "cpu-total")))] == (60.0,)
    assert by_series[("cpu_usage_idle", (("InstanceId", "i-0abc"), ("cpu", "cpu5")))] == (80.0,)
    assert by_series[("diskio_io_time", (("InstanceId", "i-0abc"), ("name", "nvme0n1")))] == (300.0,)
    assert by_series[("diskio_read_bytes", (("InstanceId", "i-0abc"), ("name", "nvme0n1")))] == (1000.0,)
    assert by_series[("netstat_tcp_established", (("InstanceId", "i-0abc"),))] == (3.0,)
    assert by_series[("disk_inodes_free", (("InstanceId", "i-0abc"), ("device", "nvme0n1p1"), ("fstype", "ext4"),
                                           ("path", "/")))] == (16_384.0,)
    gpu0 = (("InstanceId", "i-0abc"), ("arch", "Hopper"), ("index", "0"), ("name", "NVIDIA H100 80GB HBM3"))
    assert by_series[("nvidia_smi_memory_used", gpu0)] == (10_240.0,)  # MiB


def test_build_collectors_makes_the_cloudwatch_agents_series_only_under_cwagent() -> None:
    def built(config: dict[str, object]) -> dict[str, Collector]:
        return {collector.name: collector for collector in build_collectors(parse(config))}

    cwagent = built({"naming": "cwagent", "gpu": {"enabled": False}})
    assert isinstance(cwagent["cpu"], CwagentCpuCollector) and "netstat" in cwagent
    assert (cwagent["memory"]._formulas, cwagent["storage"]._inodes_free,  # type: ignore[attr-defined]
            cwagent["diskio"]._io_time) == ("cwagent", True, True)  # type: ignore[attr-defined]
    native = built({"gpu": {"enabled": False}})
    assert isinstance(native["cpu"], CpuCollector) and "netstat" not in native
    assert (native["memory"]._formulas, native["storage"]._inodes_free,  # type: ignore[attr-defined]
            native["diskio"]._io_time) == ("native", False, False)  # type: ignore[attr-defined]
    assert "network" not in built({"naming": "cwagent", "network": {"enabled": False}, "gpu": {"enabled": False}})
    assert "netstat" not in built({"naming": "cwagent", "network": {"enabled": False}, "gpu": {"enabled": False}})


# --- the table --------------------------------------------------------------------------------------


def test_the_table_matches_the_cwagent_profile() -> None:
    for metric in CWA_METRICS:
        assert bool(metric.published_by) != bool(metric.omitted), metric.name  # published, or said why not
        for entry in metric.published_by:
            assert (CWAGENT.alias(entry).unit or METRICS[entry].unit) == metric.unit, entry
            assert published_dimensions("cwagent", entry, host=()) == tuple(sorted(metric.dimensions)), entry
    # Every series renamed to an agent name is one of the agent's metrics.
    renamed = {alias.name for alias in CWAGENT.aliases.values() if alias.name is not None}
    assert renamed <= set(BY_NAME)


def test_published_dimensions_are_the_exact_keys_per_profile() -> None:
    assert published_dimensions("cwagent", "CPUUtilization") == ("InstanceId", "cpu")
    assert published_dimensions("cwagent", "StorageUtilization", host=["Host"]) == ("device", "fstype", "host", "path")
    assert published_dimensions("cwagent", "GPUTemperature") == ("InstanceId", "arch", "index", "name")
    assert published_dimensions("native", "GPUTemperature") == ("GPU", "InstanceId")
    assert published_dimensions("native", "GPUTemperature", optional=["GPUName"]) == ("GPU", "GPUName", "InstanceId")
    assert published_dimensions("native", "StorageUtilization", host=["InstanceId", "Team"]) == (
        "InstanceId", "MountPath", "Team")


def test_docs_cwagent_table_names_every_cloudwatch_agent_metric() -> None:
    text = (ROOT / "docs" / "cwagent.md").read_text()  # kept current by tests/test_docs.py
    assert [metric.name for metric in CWA_METRICS if f"| `{metric.name}` |" not in text] == []


# --- the cwagent dashboard ----------------------------------------------------------------------------


def throughput_lines(naming: str) -> list[list[Any]]:
    from provisioning.aws import Account
    from provisioning.dashboards import DashboardBuilder
    from provisioning.discovery import Host, Inventory
    from provisioning.spec import parse as parse_spec

    spec = parse_spec({"stack": "ml", "naming": naming})
    account = Account(id="123456789012", region="us-east-1", partition="aws")
    [fleet] = DashboardBuilder(spec, account, []).build(Inventory((Host("i-0abc", (), (), ()),), ()))
    [widget] = [widget for widget in json.loads(fleet.body)["widgets"]
                if widget.get("properties", {}).get("title") == "i-0abc: disk and network throughput (bytes/s)"]
    return list(widget["properties"]["metrics"][:2])


def test_the_cwagent_dashboard_turns_per_interval_bytes_into_bytes_per_second() -> None:
    # The agent's diskio_*_bytes and net_bytes_* are deltas per collection: their Sum per period is the
    # bytes of the period; the Average of deltas (bytes per 10 s, or per 60 s) is no rate at all.
    search = ("SEARCH('{CWAgent,InstanceId,name} MetricName=\"diskio_read_bytes\" InstanceId=\"i-0abc\"', "
              "'Sum', 60)")
    assert throughput_lines("cwagent") == [
        [{"expression": search, "id": "sum0", "label": "diskio_read_bytes per period", "visible": False}],
        [{"expression": "sum0/60", "id": "search0", "label": "diskio_read_bytes per second"}],
    ]
    assert throughput_lines("native")[0] == [{
        "expression": "SEARCH('{InfraWatch,Device,InstanceId} MetricName=\"DiskReadBytesPerSecond\" "
                      "InstanceId=\"i-0abc\"', 'Average', 60)", "id": "search0", "label": "DiskReadBytesPerSecond"}]
