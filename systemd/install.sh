#!/usr/bin/env bash
# Installs, updates or removes infrawatch-agent as a systemd service. Idempotent: run it again to update.
#
#   sudo systemd/install.sh                 # venv in /opt/infrawatch, config, unit, enable and (re)start
#   sudo systemd/install.sh --uninstall     # stop, disable, remove the unit and /opt/infrawatch
#   systemd/install.sh --root DIR           # lay the same files out under DIR; no systemctl, no root needed
#
# --source SPEC    what pip installs: this repository (default), a wheel or sdist, a directory of wheels
#                  (a wheelhouse, for hosts without a package index), or a requirement such as infrawatch==0.2.0
# --version V      with a wheelhouse: the version to install from it (default: the newest there)
# --pip-arg ARG    extra pip argument, repeatable (e.g. --pip-arg --index-url=URL)
# --python PATH    interpreter the virtual environment is made from (default: python3, 3.10 or newer)
#
# /etc/infrawatch/agent.toml is written only when absent, and kept by --uninstall, as is the spool in
# /var/lib/infrawatch. The service is restarted only when the installed version or the unit changed.
set -euo pipefail

UNIT=infrawatch-agent.service
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=""
SOURCE=$(dirname "$HERE")
PYTHON=python3
VERSION=""
PIP_ARGS=()
UNINSTALL=0

usage() { sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=${2%/}; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
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
installed_version() {
    # -I: not the current directory's metadata (a checkout's infrawatch.egg-info), only the venv's
    "$VENV/bin/python" -I -c 'import importlib.metadata as m; print(m.version("infrawatch"))' 2>/dev/null || true
}

mkdir -p "$PREFIX" "$(dirname "$CONFIG")" "$WANTS"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
REQUIREMENT=$SOURCE
if [ -d "$SOURCE" ] && [ ! -e "$SOURCE/pyproject.toml" ]; then
    # A wheelhouse: everything comes from the directory, nothing from an index.
    PIP_ARGS+=(--no-index "--find-links=$SOURCE")
    REQUIREMENT="infrawatch${VERSION:+==$VERSION}"
fi
BEFORE=$(installed_version)
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade \
    ${PIP_ARGS[@]+"${PIP_ARGS[@]}"} "$REQUIREMENT"
AFTER=$(installed_version)
if [ "$BEFORE" = "$AFTER" ]; then
    echo "infrawatch $AFTER already installed in $VENV"
else
    echo "installed infrawatch ${AFTER} into $VENV${BEFORE:+ (was $BEFORE)}"
fi

if [ -e "$CONFIG" ]; then
    echo "kept $CONFIG"
else
    install -m 0644 "$HERE/agent.toml.example" "$CONFIG"
    echo "wrote $CONFIG"
fi

if cmp -s "$HERE/$UNIT" "$UNIT_DIR/$UNIT" && [ -L "$WANTS/$UNIT" ] && [ "$BEFORE" = "$AFTER" ]; then
    echo "$UNIT unchanged; not restarted"
    exit 0
fi
install -m 0644 "$HERE/$UNIT" "$UNIT_DIR/$UNIT"
ln -sfn "../$UNIT" "$WANTS/$UNIT"  # what `systemctl enable` does for WantedBy=multi-user.target
echo "installed and enabled $UNIT_DIR/$UNIT"
systemd daemon-reload
systemd restart "$UNIT"
echo "restarted $UNIT"
