#!/usr/bin/env bash
# Installs whatever is still missing for streamml on a Debian/Ubuntu machine:
# Ceph (mon, OSD, RADOS Gateway), a Java runtime for Spark, Chromium and its
# WebDriver for the console's browser tests, a Python >= 3.11 virtualenv in
# .venv with streamml and its test tools, and the S3A jars.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
for bin in ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw radosgw-admin:ceph-common \
           monmaptool:ceph-common ceph-authtool:ceph-common java:default-jre-headless \
           chromium:chromium chromedriver:chromium-driver; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || apt_packages+=("${bin##*:}")
done
pick_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
}
[ -n "$(pick_python)" ] || apt_packages+=(python3 python3-venv)
if [ ${#apt_packages[@]} -gt 0 ]; then
    readarray -t apt_packages < <(printf '%s\n' "${apt_packages[@]}" | sort -u)
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages: ${apt_packages[*]}" >&2
        echo "setup: run as root: apt-get update && apt-get install -y ${apt_packages[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${apt_packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

python=$(pick_python)
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $python"
    "$python" -m venv .venv
fi
stamp=.venv/.streamml-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing Python dependencies"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
bash scripts/install_spark_jars.sh vendor/jars
