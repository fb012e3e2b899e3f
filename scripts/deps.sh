#!/bin/sh
# Installs everything sluice needs to build, test, demo and benchmark, from
# Debian packages only. Safe to run again: apt-get skips what is present.
set -eu
if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: run as root (it calls apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# chromium (with a font to draw text): tests/integration/test_page.py loads
# the status page in a real headless browser and takes a screenshot.
# libsystemd-dev: sd_notify() for the Type=notify unit (src/notify.c).
# pandoc: the man pages, from docs/ (make man). debhelper, dpkg-dev,
# fakeroot: make deb; logrotate and man-db: make deb-test checks the
# installed logrotate file and man pages.
# libprotobuf-c-dev: protobuf-c.h, which libpg-query-dev's pg_query.pb-c.h
# includes but does not depend on (classify_rw.c walks the protobuf tree;
# the protobuf-c code itself is inside libpg_query).
PKGS="build-essential pkg-config clang llvm libclang-rt-14-dev \
  libev-dev libssl-dev libinih-dev libhiredis-dev libpg-query-dev libprotobuf-c-dev libcmocka-dev \
  libsystemd-dev pandoc debhelper dpkg-dev fakeroot logrotate man-db \
  postgresql-15 postgresql-client-15 postgresql-15-hypopg pgbouncer redis-server \
  python3 python3-pytest python3-psycopg python3-asyncpg python3-sqlalchemy \
  python3-psycopg2 python3-pytest-timeout libpostgresql-jdbc-java openssl procps iproute2 valgrind cppcheck clang-format \
  chromium fonts-dejavu-core"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing
fi
# Debian starts a default cluster and pgbouncer on install; sluice's scripts run
# their own on their own ports, so the packaged services are left as they are.
echo "deps.sh: all dependencies present"
