#!/usr/bin/env bash
# Start a local PostgreSQL server for the multi-worker tests (Debian's postgresql package) and print the URL.
# Installs the package when absent; re-uses a running server. Prints nothing and exits non-zero on failure.
set -euo pipefail
URL="postgresql://mednas:mednas@127.0.0.1:5432/mednas_test"
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) >&2
  fi
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h 2>/dev/null | grep -q "^${version} main"; then
    pg_createcluster "$version" main >&2
  fi
  pg_ctlcluster "$version" main start >&2 || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -q -h 127.0.0.1 -p 5432
run_psql() { su postgres -s /bin/sh -c "psql -qAt -h /var/run/postgresql $*"; }
if [ "$(run_psql "-c \"SELECT 1 FROM pg_roles WHERE rolname='mednas'\"")" != "1" ]; then
  run_psql "-c \"CREATE ROLE mednas LOGIN CREATEDB PASSWORD 'mednas'\"" >&2
else
  # CREATEDB: the concurrent-start test creates (and drops) a fresh database per repetition.
  run_psql "-c \"ALTER ROLE mednas CREATEDB\"" >&2
fi
if [ "$(run_psql "-c \"SELECT 1 FROM pg_database WHERE datname='mednas_test'\"")" != "1" ]; then
  run_psql "-c \"CREATE DATABASE mednas_test OWNER mednas\"" >&2
fi
echo "$URL"
