"""Agent rollout through SSM: the Command document that installs, configures, upgrades and removes the agent,
and the State Manager association that runs it on every instance with a tag, with rate controls.

The document's script is `systemd/ssm/manage.sh`; `document()` wraps it in SSM's schema 2.2 with one
parameter per setting, each with an `allowedPattern`, because SSM substitutes `{{ name }}` into the script
as text: the patterns keep quotes and shell syntax out. `systemd/ssm/infrawatch-manage.json` is the rendered
document (`python -m provisioning.rollout document` writes it; a test checks it is current), for users who
create it by hand or with another tool.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioning.spec import Rollout

SSM = Path(__file__).resolve().parent.parent / "systemd" / "ssm"
SCRIPT = SSM / "manage.sh"
DOCUMENT = SSM / "infrawatch-manage.json"

# What a parameter may hold: SSM checks these before it substitutes the value into the script, and the spec
# checks the same patterns at load.
VERSION_PATTERN = r"^[0-9A-Za-z.+!-]{0,64}$"
SOURCE_PATTERN = (r"^(|index|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*()/+=-]*)?|"
                  r"https://[A-Za-z0-9._~:/%+=-]+)$")
SHA256_PATTERN = r"^([0-9a-f]{64})?$"
PARAMETER_NAME_PATTERN = r"^(/?[A-Za-z0-9_.-]+)*$"

# (document parameter, environment variable of manage.sh, description, allowedPattern or allowedValues)
PARAMETERS: tuple[tuple[str, str, str, str | tuple[str, ...]], ...] = (
    ("action", "ACTION", "install (and configure), configure, uninstall or status.",
     ("install", "configure", "uninstall", "status")),
    ("version", "VERSION", "The infrawatch version, e.g. 0.2.0.", VERSION_PATTERN),
    ("source", "SOURCE", "s3://bucket/key of the wheel, s3://bucket/prefix/ of a wheelhouse, an https URL, or "
     "index (the package index).", SOURCE_PATTERN),
    ("sha256", "SHA256", "SHA-256 of the infrawatch wheel; any other is refused.", SHA256_PATTERN),
    ("config", "CONFIG_PARAMETER", "SSM Parameter Store name of the agent's TOML; empty: keep the installed one.",
     PARAMETER_NAME_PATTERN),
    ("pipOptions", "PIP_OPTIONS", "Extra pip options, e.g. --index-url=https://mirror/simple.",
     r"^[A-Za-z0-9_.=:/ +-]*$"),
)
DEFAULTS = {"action": "install", "source": "index"}


def document() -> dict[str, Any]:
    """The SSM Command document (schema 2.2), its script the lines of manage.sh after their parameters."""
    parameters: dict[str, Any] = {}
    exports = []
    for name, variable, description, allowed in PARAMETERS:
        parameter: dict[str, Any] = {"type": "String", "description": description, "default": DEFAULTS.get(name, "")}
        if isinstance(allowed, tuple):
            parameter["allowedValues"] = list(allowed)
        else:
            parameter["allowedPattern"] = allowed
        parameters[name] = parameter
        exports.append(f"{variable}='{{{{ {name} }}}}'")
    script = SCRIPT.read_text().splitlines()
    body = [line for line in script if not line.startswith("#!")]
    return {
        "schemaVersion": "2.2",
        "description": "Install, configure, upgrade or remove infrawatch-agent (infrawatch's systemd service).",
        "parameters": parameters,
        "mainSteps": [{
            "action": "aws:runShellScript",
            "name": "manage",
            "precondition": {"StringEquals": ["platformType", "Linux"]},
            # SSM runs the lines as one script; the guard re-runs it under bash where sh (dash) started it.
            "inputs": {"timeoutSeconds": "900", "runCommand": [
                "#!/usr/bin/env bash", 'if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi',
                "export " + " ".join(exports), *body]},
        }],
    }


def rendered_document() -> str:
    return json.dumps(document(), indent=2) + "\n"


def association_parameters(rollout: Rollout) -> dict[str, list[str]]:
    return {"action": ["install"], "version": [rollout.version], "source": [rollout.source],
            "sha256": [rollout.sha256], "config": [rollout.config_parameter]}


def resources(stack: str, rollout: Rollout) -> dict[str, dict[str, Any]]:
    """CloudFormation resources for an enabled rollout: the document and the association that targets by tag."""
    if not rollout.enabled:
        return {}
    return {
        "AgentDocument": {
            "Type": "AWS::SSM::Document",
            "Properties": {"Name": f"{stack}-infrawatch-manage", "DocumentType": "Command",
                           "DocumentFormat": "JSON", "Content": document(), "UpdateMethod": "NewVersion"},
        },
        "AgentAssociation": {
            "Type": "AWS::SSM::Association",
            "Properties": {
                "AssociationName": f"{stack}-infrawatch-agent",
                "Name": {"Ref": "AgentDocument"},
                "DocumentVersion": "$LATEST",
                "Targets": [{"Key": f"tag:{rollout.tag_key}", "Values": [rollout.tag_value]}],
                "Parameters": association_parameters(rollout),
                "ScheduleExpression": rollout.schedule,
                "ApplyOnlyAtCronInterval": False,  # also at once, and on every instance that starts with the tag
                "MaxConcurrency": rollout.max_concurrency,
                "MaxErrors": rollout.max_errors,
                "ComplianceSeverity": "HIGH",
            },
        },
    }


def template(stack: str, rollout: Rollout) -> dict[str, Any]:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"infrawatch agent rollout for stack {stack}: SSM document and State Manager association",
        "Resources": resources(stack, rollout),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m provisioning.rollout document` rewrites systemd/ssm/infrawatch-manage.json."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["document"]:
        print("usage: python -m provisioning.rollout document", file=sys.stderr)
        return 2
    DOCUMENT.write_text(rendered_document())
    print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
