"""Rollout through SSM: the Command document's script run under bash against a staging root, with the real AWS
CLI reading the wheel from S3 and the config from Parameter Store on a moto server; the document and the
association accepted by moto's SSM API; the CloudFormation resources clean under cfn-lint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from provisioning.rollout import DOCUMENT, document, rendered_document, template
from provisioning.spec import parse
from tests.conftest import REPO, serving_moto, use_fake_aws

BUCKET = "infrawatch-releases"
PARAMETER = "/infrawatch/agent.toml"
VERSION = "0.1.0"
BIN = Path(sys.executable).parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rebranded(wheel: Path, version: str, directory: Path) -> Path:
    """The same wheel as another version, as a release would be: dist-info, data dir, METADATA and RECORD."""
    old = wheel.name.split("-")[1]
    target = directory / wheel.name.replace(f"-{old}-", f"-{version}-")
    files = {}
    with zipfile.ZipFile(wheel) as source:
        for name in source.namelist():
            data = source.read(name)
            name = name.replace(f"infrawatch-{old}.", f"infrawatch-{version}.")
            if name.endswith(".dist-info/METADATA"):
                data = data.replace(f"\nVersion: {old}\n".encode(), f"\nVersion: {version}\n".encode())
            files[name] = data
    record = next(name for name in files if name.endswith(".dist-info/RECORD"))
    digest = {name: base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
              for name, data in files.items()}
    files[record] = "".join(f"{name},sha256={digest[name]},{len(data)}\n" for name, data in files.items()
                            if name != record).encode() + f"{record},,\n".encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return target


class Instance:
    """One staged instance: the document's script, its parameters substituted as SSM does, run under bash."""

    def __init__(self, root: Path, endpoint: str, work: Path, newer: Path, lent: Path) -> None:
        self.lent = lent
        self.root = root
        self.endpoint = endpoint
        self.work = work
        self.newer = newer  # release 0.1.1, as uploaded

    def run(self, **parameters: str) -> subprocess.CompletedProcess[str]:
        spec = json.loads(DOCUMENT.read_text())
        values = {name: parameters.get(name, declared["default"]) for name, declared in spec["parameters"].items()}
        for name, value in values.items():  # SSM refuses a value outside the declared pattern before running
            declared = spec["parameters"][name]
            allowed = declared.get("allowedValues")
            assert (value in allowed) if allowed else re.match(declared["allowedPattern"], value), (name, value)
        lines = spec["mainSteps"][0]["inputs"]["runCommand"]
        script = "\n".join(lines)
        for name, value in values.items():
            script = script.replace(f"{{{{ {name} }}}}", value)
        path = self.work / "_script.sh"
        path.write_text(script + "\n")
        env = {
            **os.environ,
            "INFRAWATCH_ROOT": str(self.root),
            "AWS_ENDPOINT_URL": self.endpoint,
            "PATH": f"{BIN}:{os.environ['PATH']}",  # the AWS CLI (awscli, a dev dependency)
            # Offline: the wheel's dependencies are lent by the test environment instead of installed.
            "PYTHONPATH": str(self.lent),
        }
        return subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=300,
                              check=False)

    def files(self) -> set[str]:
        return {str(path.relative_to(self.root)) for path in self.root.rglob("*")
                if "/venv/" not in str(path.relative_to(self.root))}

    def version(self) -> str:
        probe = subprocess.run([self.root / "opt/infrawatch/venv/bin/python", "-I", "-c",
                                "import importlib.metadata as m; print(m.version('infrawatch'))"],
                               capture_output=True, text=True, check=True)
        return probe.stdout.strip()


@pytest.fixture(scope="module")
def lent_dependencies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test environment's packages without infrawatch and pip, so that pip in the staged venv sees only
    what that venv holds, while the installed agent can import its dependencies."""
    lent = tmp_path_factory.mktemp("lent")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("infrawatch", "__editable__", "pip", "_distutils_hack")):
            (lent / entry.name).symlink_to(entry)
    return lent


def publish_releases(built_wheel: Path, newer: Path) -> None:
    """What a release pipeline leaves in S3 and Parameter Store, on the server AWS_ENDPOINT_URL names."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(built_wheel), BUCKET, f"{VERSION}/{built_wheel.name}")
    s3.upload_file(str(newer), BUCKET, f"0.1.1/{newer.name}")
    for wheel in (built_wheel, newer):  # a wheelhouse holding both releases
        s3.upload_file(str(wheel), BUCKET, f"wheelhouse/{wheel.name}")
    boto3.client("ssm").put_parameter(Name=PARAMETER, Type="String", Value='naming = "cwagent"\n')


@dataclass(frozen=True)
class FirstInstall:
    result: subprocess.CompletedProcess[str]
    root: Path  # every test's staging root: a venv's scripts name their own path, so it never moves
    snapshot: Path  # the root as the first install left it
    newer: Path


@pytest.fixture(scope="module")
def first_install(tmp_path_factory: pytest.TempPathFactory, built_wheel: Path, lent_dependencies: Path,
                  moto_upstream: str) -> FirstInstall:
    """Release 0.1.0 installed once for the module (the agent's venv, about 5 s). A test that starts from an
    installed agent gets this root back, copied to the same path, instead of installing it again."""
    base = tmp_path_factory.mktemp("rollout")
    newer = rebranded(built_wheel, "0.1.1", base)
    root, work = base / "root", base / "work"
    root.mkdir()
    work.mkdir()
    with pytest.MonkeyPatch.context() as patch, serving_moto(moto_upstream) as endpoint:
        use_fake_aws(patch)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        publish_releases(built_wheel, newer)
        result = install(Instance(root, endpoint, work, newer, lent_dependencies), built_wheel)
    shutil.copytree(root, base / "installed", symlinks=True)
    return FirstInstall(result, root, base / "installed", newer)


@pytest.fixture
def instance(moto_server: str, tmp_path: Path, built_wheel: Path, monkeypatch: pytest.MonkeyPatch,
             lent_dependencies: Path, first_install: FirstInstall) -> Instance:
    """An instance with nothing installed; the releases published on this test's moto server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    publish_releases(built_wheel, first_install.newer)
    shutil.rmtree(first_install.root)
    first_install.root.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    return Instance(first_install.root, moto_server, work, first_install.newer, lent_dependencies)


@pytest.fixture
def installed(instance: Instance, first_install: FirstInstall) -> Instance:
    """`instance` as `install(instance, built_wheel)` leaves it, which `first_install` checks."""
    assert first_install.result.returncode == 0, first_install.result.stderr
    shutil.rmtree(instance.root)
    shutil.copytree(first_install.snapshot, instance.root, symlinks=True)
    return instance


def install(instance: Instance, wheel: Path, version: str = VERSION, **extra: str) -> subprocess.CompletedProcess[str]:
    return instance.run(action="install", version=version, source=f"s3://{BUCKET}/{version}/{wheel.name}",
                        sha256=sha256(wheel), config=PARAMETER, pipOptions="--no-deps --no-index", **extra)


def test_the_committed_document_is_the_rendered_script() -> None:
    assert DOCUMENT.read_text() == rendered_document(), "run `python -m provisioning.rollout document`"


def test_install_from_s3_with_config_from_parameter_store_then_nothing_on_a_rerun(
    first_install: FirstInstall, installed: Instance, built_wheel: Path
) -> None:
    first = first_install.result
    assert first.returncode == 0, first.stderr
    venv = installed.root / "opt/infrawatch/venv"
    assert first.stdout.splitlines() == [
        f"installed infrawatch {VERSION} into {venv}",
        f"wrote {installed.root}/etc/infrawatch/agent.toml",
        f"installed and enabled {installed.root}/etc/systemd/system/infrawatch-agent.service",
        "restarted infrawatch-agent.service",
        f"infrawatch-manage: config from {PARAMETER} installed; reloading",
    ]
    assert (installed.root / "etc/infrawatch/agent.toml").read_text() == 'naming = "cwagent"\n'
    assert installed.version() == VERSION
    again = install(installed, built_wheel)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"infrawatch {VERSION} already installed in {venv}",
        f"kept {installed.root}/etc/infrawatch/agent.toml",
        "infrawatch-agent.service unchanged; not restarted",
        "infrawatch-manage: config unchanged",
    ]


def test_a_wrong_checksum_is_refused_and_nothing_changes(instance: Instance, built_wheel: Path) -> None:
    refused = instance.run(action="install", version=VERSION, source=f"s3://{BUCKET}/{VERSION}/{built_wheel.name}",
                           sha256="0" * 64, pipOptions="--no-deps --no-index")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"infrawatch-manage: checksum mismatch for {built_wheel.name}: expected {'0' * 64}, got "
        f"{sha256(built_wheel)}; nothing changed")
    assert instance.files() == set()


def test_a_wheel_without_the_installer_is_refused_and_nothing_changes(instance: Instance, built_wheel: Path,
                                                                     tmp_path: Path) -> None:
    stripped = tmp_path / built_wheel.name
    with zipfile.ZipFile(built_wheel) as source, zipfile.ZipFile(stripped, "w") as target:
        for name in source.namelist():
            if not name.endswith("/share/infrawatch/install.sh"):
                target.writestr(name, source.read(name))
    boto3.client("s3").upload_file(str(stripped), BUCKET, f"stripped/{stripped.name}")
    refused = instance.run(action="install", version=VERSION, source=f"s3://{BUCKET}/stripped/{stripped.name}",
                           sha256=sha256(stripped), pipOptions="--no-deps --no-index")
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1] == (
        f"infrawatch-manage: no share/infrawatch/install.sh in {stripped.name}")
    assert instance.files() == set()


def test_an_invalid_config_keeps_the_running_one_and_fails_the_command(installed: Instance) -> None:
    boto3.client("ssm").put_parameter(Name=PARAMETER, Type="String", Value='naming = "cwagnet"\n', Overwrite=True)
    refused = installed.run(action="configure", config=PARAMETER)
    assert refused.returncode == 1  # MaxErrors counts it
    assert refused.stderr.splitlines()[-1] == (
        f"infrawatch-manage: the config in {PARAMETER} is invalid (above); "
        f"kept {installed.root}/etc/infrawatch/agent.toml")
    assert 'naming: must be "native" or "cwagent", got "cwagnet"' in refused.stderr.splitlines()
    assert (installed.root / "etc/infrawatch/agent.toml").read_text() == 'naming = "cwagent"\n'


def test_an_upgrade_restarts_once_and_a_wheelhouse_rolls_back(installed: Instance, built_wheel: Path) -> None:
    upgraded = install(installed, installed.newer, version="0.1.1")
    assert upgraded.returncode == 0, upgraded.stderr
    venv = installed.root / "opt/infrawatch/venv"
    assert upgraded.stdout.splitlines()[0] == f"installed infrawatch 0.1.1 into {venv} (was {VERSION})"
    assert upgraded.stdout.splitlines().count("restarted infrawatch-agent.service") == 1
    assert installed.version() == "0.1.1"
    back = installed.run(action="install", version=VERSION, source=f"s3://{BUCKET}/wheelhouse/",
                         sha256=sha256(built_wheel), pipOptions="--no-deps")
    assert back.returncode == 0, back.stderr
    assert back.stdout.splitlines()[0] == f"installed infrawatch {VERSION} into {venv} (was 0.1.1)"
    assert installed.version() == VERSION


def test_status_and_uninstall(installed: Instance) -> None:
    status = installed.run(action="status")
    assert (status.returncode, status.stdout) == (0, f"infrawatch-agent {VERSION}\n")
    removed = installed.run(action="uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (installed.root / "opt/infrawatch/venv").exists()
    assert (installed.root / "etc/infrawatch/agent.toml").exists()  # kept, as install.sh --uninstall keeps it


def test_parameters_that_could_break_out_of_the_script_are_refused_by_their_patterns() -> None:
    declared = document()["parameters"]
    for name, value in (("version", "1.0'; rm -rf / #"), ("source", "s3://b/k$(id)"), ("sha256", "abc"),
                        ("config", "/a b"), ("pipOptions", "--x;reboot")):
        assert re.match(declared[name]["allowedPattern"], value) is None, name
    assert declared["action"]["allowedValues"] == ["install", "configure", "uninstall", "status"]


ROLLOUT = {"rollout": {"enabled": True, "version": "0.2.0", "source": "s3://releases/infrawatch-0.2.0-py3-none-any.whl",
                       "sha256": "a" * 64, "config_parameter": PARAMETER, "tag_value": "training"}}


def test_the_document_and_a_command_in_moto_and_the_association_against_the_ssm_model(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    resources = template("ml", parse(ROLLOUT).rollout)["Resources"]
    ssm = boto3.client("ssm")
    doc = resources["AgentDocument"]["Properties"]
    ssm.create_document(Name=doc["Name"], Content=json.dumps(doc["Content"]), DocumentType="Command",
                        DocumentFormat="JSON")
    described = ssm.describe_document(Name=doc["Name"])["Document"]
    assert [p["Name"] for p in described["Parameters"]] == ["action", "version", "source", "sha256", "config",
                                                            "pipOptions"]
    association = resources["AgentAssociation"]["Properties"]
    command = ssm.send_command(DocumentName=doc["Name"], Targets=association["Targets"],
                               Parameters={"action": ["status"]})["Command"]
    assert (command["DocumentName"], command["Parameters"]) == (doc["Name"], {"action": ["status"]})

    # moto has no CreateAssociation: botocore validates the request against SSM's own service model.
    stubbed = boto3.client("ssm")
    request = {key: association[key] for key in ("AssociationName", "Targets", "Parameters", "ScheduleExpression",
                                                 "ApplyOnlyAtCronInterval", "MaxConcurrency", "MaxErrors",
                                                 "ComplianceSeverity", "DocumentVersion")}
    with Stubber(stubbed) as stubber:
        stubber.add_response("create_association", {"AssociationDescription": {"Name": doc["Name"]}},
                             {"Name": doc["Name"], **request})
        stubbed.create_association(Name=doc["Name"], **request)
    assert (request["Targets"], request["MaxConcurrency"], request["MaxErrors"]) == (
        [{"Key": "tag:infrawatch:fleet", "Values": ["training"]}], "10%", "5%")


def test_cfn_lint_finds_nothing_in_the_rollout_resources(tmp_path: Path) -> None:
    path = tmp_path / "rollout.json"
    path.write_text(json.dumps(template("ml", parse(ROLLOUT).rollout)))
    linted = subprocess.run([str(BIN / "cfn-lint"), str(path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert (linted.returncode, linted.stdout) == (0, "")


def test_an_enabled_rollout_must_say_what_and_where() -> None:
    from agent.schema import ConfigError

    with pytest.raises(ConfigError) as error:
        parse({"rollout": {"enabled": True, "source": "s3://releases/infrawatch-0.3.0-py3-none-any.whl",
                           "version": "0.2.0", "max_errors": "200%"}})
    assert error.value.problems == [
        'rollout.max_errors: must be N or N%, got "200%"',
        'rollout.sha256: must be set when rollout.enabled = true, got ""',
        'rollout.tag_value: must be set when rollout.enabled = true, got ""',
        'rollout.source: names a wheel that is not version 0.2.0, got '
        '"s3://releases/infrawatch-0.3.0-py3-none-any.whl"',
    ]
    assert REPO.joinpath("systemd/ssm/manage.sh").exists()
