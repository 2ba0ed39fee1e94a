#!/usr/bin/env bash
# Installs, updates or removes infrawatch-agent as a systemd service. Idempotent: run it again to update.
#
#   sudo systemd/install.sh                 # venv in /opt/infrawatch, config, unit, enable and (re)start
#   sudo systemd/install.sh --uninstall     # stop, disable, remove the unit and /opt/infrawatch
#   systemd/install.sh --root DIR           # lay the same files out under DIR; no systemctl, no root needed
#
# --source SPEC    what pip installs (default: this repository; a wheel or sdist path works too)
# --pip-arg ARG    extra pip argument, repeatable (e.g. --pip-arg --no-index --pip-arg --find-links=DIR)
# --python PATH    interpreter the virtual environment is made from (default: python3, 3.10 or newer)
#
# /etc/infrawatch/agent.toml is written only when absent, and kept by --uninstall, as is the spool in
# /var/lib/infrawatch.
set -euo pipefail

UNIT=infrawatch-agent.service
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=""
SOURCE=$(dirname "$HERE")
PYTHON=python3
PIP_ARGS=()
UNINSTALL=0

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2%/}; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --pip-arg) PIP_ARGS+=("$2"); shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

PREFIX=$ROOT/opt/infrawatch
VENV=$PREFIX/venv
CONFIG=$ROOT/etc/infrawatch/agent.toml
UNIT_DIR=$ROOT/etc/systemd/system
WANTS=$UNIT_DIR/multi-user.target.wants

systemd() {
    # With --root there is no running systemd to talk to: the files are all there is.
    if [ -z "$ROOT" ]; then systemctl "$@"; fi
}

if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root, or lay the files out with --root DIR" >&2
    exit 1
fi

if [ "$UNINSTALL" -eq 1 ]; then
    if [ -e "$UNIT_DIR/$UNIT" ]; then systemd disable --now "$UNIT"; fi
    rm -f "$WANTS/$UNIT" "$UNIT_DIR/$UNIT"
    systemd daemon-reload
    rm -rf "$PREFIX"
    echo "removed $UNIT and $PREFIX; kept $CONFIG and the spool in /var/lib/infrawatch"
    exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "install.sh: $PYTHON is older than Python 3.10; name another with --python" >&2
    exit 1
fi
mkdir -p "$PREFIX" "$(dirname "$CONFIG")" "$WANTS"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$SOURCE"
echo "installed infrawatch-agent into $VENV"

if [ -e "$CONFIG" ]; then
    echo "kept $CONFIG"
else
    install -m 0644 "$HERE/agent.toml.example" "$CONFIG"
    echo "wrote $CONFIG"
fi

install -m 0644 "$HERE/$UNIT" "$UNIT_DIR/$UNIT"
ln -sfn "../$UNIT" "$WANTS/$UNIT"  # what `systemctl enable` does for WantedBy=multi-user.target
echo "installed and enabled $UNIT_DIR/$UNIT"
systemd daemon-reload
systemd restart "$UNIT"
