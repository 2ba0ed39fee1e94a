#!/usr/bin/env bash
# The SSM Command document infrawatch-manage runs this on each instance: `python -m provisioning.rollout
# document` renders it into systemd/ssm/infrawatch-manage.json, and a test checks the two agree.
# Parameters arrive as environment variables: ACTION, VERSION, SOURCE, SHA256, CONFIG_PARAMETER, PIP_OPTIONS.
# INFRAWATCH_ROOT, when set, stages everything under a directory (image builds, tests): no systemctl.
set -euo pipefail
root=${INFRAWATCH_ROOT:-}
venv=$root/opt/infrawatch/venv
config=$root/etc/infrawatch/agent.toml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
read -r -a pip_options <<<"${PIP_OPTIONS:-}"

say() { echo "infrawatch-manage: $*"; }
fail() { echo "infrawatch-manage: $*" >&2; exit 1; }
service() { if [ -z "$root" ]; then systemctl "$@"; fi; }

fetch() {  # an S3 object, an S3 prefix ending in / (a wheelhouse), an https URL, or a local path
    case "$1" in
        s3://*/) aws s3 cp --only-show-errors --recursive "$1" "$2/" ;;
        s3://*) aws s3 cp --only-show-errors "$1" "$2/" ;;
        https://*) (cd "$2" && curl -fsSLO "$1") ;;
        *) if [ -d "$1" ]; then cp "$1"/*.whl "$2/"; else cp "$1" "$2/"; fi ;;
    esac
}

verify() {  # the infrawatch wheel among what was fetched must have the published checksum
    local wheels=("$work"/source/infrawatch-"${VERSION:-}"*.whl)
    [ -e "${wheels[0]}" ] || fail "no infrawatch${VERSION:+ $VERSION} wheel in $SOURCE"
    [ ${#wheels[@]} -eq 1 ] || fail "several infrawatch wheels in $SOURCE: name the version"
    [ -n "${SHA256:-}" ] || fail "sha256 is required to install from $SOURCE"
    local actual
    actual=$(sha256sum "${wheels[0]}" | cut -d' ' -f1)
    [ "$actual" = "$SHA256" ] || fail "checksum mismatch for $(basename "${wheels[0]}"): expected $SHA256, got $actual; nothing changed"
    wheel=${wheels[0]}
}

install_agent() {
    mkdir -p "$work/source"
    if [ -z "${SOURCE:-}" ] || [ "$SOURCE" = "index" ]; then
        [ -n "${VERSION:-}" ] || fail "version is required to install from the package index"
        python3 -m pip download --quiet --no-deps ${pip_options[@]+"${pip_options[@]}"} \
            --dest "$work/source" "infrawatch==$VERSION"
        verify
        installer_source=("--source" "infrawatch==$VERSION")
    else
        fetch "$SOURCE" "$work/source"
        verify
        if [ "$(find "$work/source" -name '*.whl' | wc -l)" -gt 1 ]; then
            installer_source=("--source" "$work/source" "--version" "$(basename "$wheel" | cut -d- -f2)")
        else
            installer_source=("--source" "$wheel")
        fi
    fi
    # The installer travels in the wheel, beside the unit and example config it installs (the data files
    # that land in <venv>/share/infrawatch). A wheel is a zip: python3's zipfile unpacks it (unzip is not on
    # every AMI), in a fraction of the time a throwaway venv and pip took.
    python3 -m zipfile -e "$wheel" "$work/wheel"
    local installer=("$work"/wheel/infrawatch-*.data/data/share/infrawatch/install.sh)
    [ -f "${installer[0]}" ] || fail "no share/infrawatch/install.sh in $(basename "$wheel")"
    pip_args=()
    for option in ${pip_options[@]+"${pip_options[@]}"}; do pip_args+=("--pip-arg" "$option"); done
    bash "${installer[0]}" ${root:+--root "$root"} "${installer_source[@]}" \
        ${pip_args[@]+"${pip_args[@]}"}
}

configure() {
    [ -n "${CONFIG_PARAMETER:-}" ] || return 0
    [ -x "$venv/bin/infrawatch-agent" ] || fail "infrawatch is not installed: run action install first"
    local value  # $(...) drops the trailing newlines the CLI adds; the file gets exactly one
    value=$(aws ssm get-parameter --name "$CONFIG_PARAMETER" --with-decryption --query Parameter.Value \
        --output text) || fail "could not read the SSM parameter $CONFIG_PARAMETER"
    printf '%s\n' "$value" >"$work/agent.toml"
    if ! "$venv/bin/infrawatch-agent" check-config "$work/agent.toml" >&2; then
        fail "the config in $CONFIG_PARAMETER is invalid (above); kept $config"
    fi
    if cmp -s "$work/agent.toml" "$config"; then
        say "config unchanged"
        return 0
    fi
    install -D -m 0644 "$work/agent.toml" "$config"
    say "config from $CONFIG_PARAMETER installed; reloading"
    service reload infrawatch-agent.service
}

case "${ACTION:-}" in
    install) install_agent; configure ;;
    configure) configure ;;
    uninstall)
        [ -x "$venv/bin/python" ] || { say "not installed"; exit 0; }
        bash "$venv/share/infrawatch/install.sh" ${root:+--root "$root"} --uninstall ;;
    status)
        [ -x "$venv/bin/infrawatch-agent" ] || fail "not installed"
        "$venv/bin/infrawatch-agent" --version
        service is-active infrawatch-agent.service ;;
    *) fail "action must be install, configure, uninstall or status, got \"${ACTION:-}\"" ;;
esac
