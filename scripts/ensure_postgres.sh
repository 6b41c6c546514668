#!/usr/bin/env bash
# Make sure a PostgreSQL server with trust auth answers on 127.0.0.1:5432 and has database `test`.
# Order: already running → start the machine's cluster → install Debian's postgresql and start a
# private trust-auth cluster. Fails loudly when none of that works (the Postgres suite must not skip).
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "installing Debian's postgresql"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! ready && command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

if ! ready; then
  # A private cluster with trust auth on loopback only (postgres refuses to run as root).
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  datadir=${MEMALPHA_CACHE:-$HOME/.cache/memalpha}/pgdata
  mkdir -p "$datadir" && chown -R postgres "$datadir"
  if [ ! -f "$datadir/PG_VERSION" ]; then
    su postgres -c "$bindir/initdb -q -D $datadir -A trust -U postgres"
  fi
  su postgres -c "$bindir/pg_ctl -D $datadir -l $datadir/server.log -o '-h 127.0.0.1 -p 5432 -k /tmp' start"
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi

ready || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 and could not be started" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test"
echo "PostgreSQL ready on 127.0.0.1:5432"
