#!/usr/bin/env bash
# Installs auditd as the systemd service auditd-ai.service (see docs/operations.md#install).
#
#   sudo systemd/install.sh [--dry-run] [--source SPEC] [--extras LIST] [--gpu] [--no-start]
#
#   --dry-run       print what would be done, change nothing (needs no root)
#   --source SPEC   what pip installs: a checkout (default: this repository), a wheel, or a requirement
#   --extras LIST   pip extras, comma-separated, e.g. postgres,t2i,grpo
#   --gpu           also install the GPU drop-in (systemd/auditd-gpu.conf)
#   --no-start      install and enable, but do not start (or restart) the service
#
# Safe to run again: it upgrades the package in the venv, replaces the unit files, and keeps an existing
# /etc/auditd/auditd.env and /etc/auditd/policies. It runs the database migrations before (re)starting.
set -euo pipefail
# The venv and docs must be readable by the service user whatever root's umask is.
umask 022

PREFIX=/opt/auditd
VENV=$PREFIX/venv
CONF_DIR=/etc/auditd
UNIT=auditd-ai.service
UNIT_DIR=/etc/systemd/system
SERVICE_USER=auditd
PYTHON=${PYTHON:-python3}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

dry_run=0
source_spec=$repo
extras=""
gpu=0
start=1

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --source) source_spec=${2:?--source needs a value}; shift ;;
        --extras) extras=${2:?--extras needs a value}; shift ;;
        --gpu) gpu=1 ;;
        --no-start) start=0 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# Every change goes through run, so --dry-run only prints.
run() {
    if [ "$dry_run" = 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

if [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (or with --dry-run)" >&2
    exit 1
fi

spec=$source_spec
if [ -n "$extras" ]; then
    spec="$source_spec[$extras]"
fi

# 1. The service user (static, so verdict folders and GPU nodes can be granted to it).
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    run useradd --system --user-group --home-dir /var/lib/auditd --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER"
fi

# 2. The virtual environment and the package.
if [ ! -x "$VENV/bin/python" ]; then
    run "$PYTHON" -m venv "$VENV"
fi
run "$VENV/bin/pip" install --quiet --upgrade "$spec"
run install -D -m 0644 "$repo/docs/operations.md" "$PREFIX/docs/operations.md"

# 3. Configuration: kept if present (it is the operator's).
run install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [ ! -e "$CONF_DIR/auditd.env" ]; then
    run install -m 0640 -o root -g "$SERVICE_USER" "$here/auditd.env.example" "$CONF_DIR/auditd.env"
fi
if [ ! -e "$CONF_DIR/policies" ]; then
    run cp -r "$repo/policies" "$CONF_DIR/policies"
    run chmod -R u=rwX,g=rX,o= "$CONF_DIR/policies"
    run chgrp -R "$SERVICE_USER" "$CONF_DIR/policies"
else
    echo "install.sh: keeping $CONF_DIR/policies; compare with $repo/policies after an upgrade" >&2
fi

# 4. The unit and its drop-ins.
run install -m 0644 "$here/$UNIT" "$UNIT_DIR/$UNIT"
if [ "$gpu" = 1 ]; then
    run install -D -m 0644 "$here/auditd-gpu.conf" "$UNIT_DIR/$UNIT.d/gpu.conf"
fi
run systemctl daemon-reload

# 5. Database migrations, as the service user with the service's environment and state directory.
run systemd-run --quiet --wait --pipe --collect \
    -p User="$SERVICE_USER" -p Group="$SERVICE_USER" -p StateDirectory=auditd -p UMask=0077 \
    -p Environment=AUDITD_HOME=/var/lib/auditd -p Environment=AUDITD_POLICIES_DIR="$CONF_DIR/policies" \
    -p EnvironmentFile=-"$CONF_DIR/auditd.env" \
    "$VENV/bin/auditd" db upgrade

# 6. Enable, and start (restart when it already runs, so an upgrade takes effect).
run systemctl enable "$UNIT"
if [ "$start" = 1 ]; then
    run systemctl restart "$UNIT"
    [ "$dry_run" = 1 ] || echo "install.sh: started $UNIT; check: systemctl status $UNIT; curl -s http://127.0.0.1:9464/metrics" >&2
fi
