#!/bin/sh
# Debian packages the tests need, installed only when missing (fast no-op when they are there).
# Runs as root on CI (.ci/run):
#   prometheus  promtool for tests/test_ops_prometheus.py and tests/test_ops_grafana.py, and the
#               prometheus server for the scrape/alert integration test
#   postgresql  server binaries for tests/test_postgres.py
#   systemd     systemd-analyze for tests/test_ops_systemd.py (minimal images lack it)
#   chromium    headless browser for tests/test_report_html.py (the HTML report renders, no console errors)
set -eu

need=""
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    need="$need prometheus"
fi
command -v systemd-analyze >/dev/null 2>&1 || need="$need systemd"
# postgresql: server binaries for tests/test_postgres.py (a private server per test run).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
command -v chromium >/dev/null 2>&1 || need="$need chromium"

if [ -z "$need" ]; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "install-system.sh: missing$need; run as root to install" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -qq --no-install-recommends $need >/dev/null

# On a host where systemd runs, the package just installed enables and starts a Prometheus on :9090;
# the tests start their own on free ports, so stop that one (only when this script installed it).
case $need in
    *prometheus*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        fi
        ;;
esac
case $need in
    *postgresql*)
        if [ -d /run/systemd/system ]; then
            systemctl disable --now postgresql.service >/dev/null 2>&1 || true
        fi
        ;;
esac

command -v promtool >/dev/null && command -v systemd-analyze >/dev/null
echo "install-system.sh: installed$need" >&2
