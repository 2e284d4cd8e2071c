#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 for the user postgres without a password, as the
# tests expect (EMP_TEST_POSTGRES_URL points them elsewhere). On a fresh Debian machine: install
# it, create the cluster, allow local trust auth and start it. Idempotent; quiet when it already
# runs. Trust auth is for throwaway test machines only: never run this on a shared server.
set -euo pipefail

port="${EMP_POSTGRES_PORT:-5432}"

ready() { command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p "$port"; }
ready && exit 0

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "installing postgresql (Debian)" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters --no-header 2>/dev/null | awk '{print $1, $2}' | grep -qx "$version main"; then
  echo "creating PostgreSQL $version cluster main" >&2
  # pg_createcluster runs initdb as the postgres user (initdb refuses root).
  as_root pg_createcluster "$version" main --port "$port" >/dev/null
fi

hba="/etc/postgresql/$version/main/pg_hba.conf"
if ! as_root grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
  echo "allowing trust auth from 127.0.0.1 in $hba (test machine)" >&2
  as_root sed -i -E '/^(local|host)\s/s/^/# emp: /' "$hba"
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' | as_root tee -a "$hba" >/dev/null
fi

# --skip-systemctl-redirect: these machines have no systemd; start the cluster directly.
as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload

for _ in $(seq 1 50); do ready && exit 0; sleep 0.2; done
echo "PostgreSQL $version did not start; see /var/log/postgresql/postgresql-$version-main.log" >&2
exit 1
