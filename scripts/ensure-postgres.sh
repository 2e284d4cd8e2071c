#!/usr/bin/env bash
# Make sure a PostgreSQL server of this machine's own (a Debian/Ubuntu cluster, `main` of the newest
# version) runs and lets the user postgres in from 127.0.0.1 without a password, then tell the tests
# where: print its URL on stdout and write it to .data/test-postgres-url (the Makefile passes it to
# the tests as EMP_TEST_POSTGRES_URL; the API's test helpers read the file when run directly).
#
# The port is the cluster's own, read from pg_lsclusters, never assumed to be 5432: when another
# server holds the port, a new cluster is created on a free one (as Debian's package does), and a
# server answering on the port is taken only if its data directory is the cluster's. Installs
# PostgreSQL when missing. Skipped when EMP_TEST_POSTGRES_URL is given (it prints that URL).
# Trust auth is for throwaway test machines only: never run this on a shared server.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
url_file=.data/test-postgres-url

if [ -n "${EMP_TEST_POSTGRES_URL:-}" ]; then echo "$EMP_TEST_POSTGRES_URL"; exit 0; fi

if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  apt_install "the API's tests" postgresql
fi

# cluster FIELD: a field of the main cluster of $version in pg_lsclusters (port, status, datadir).
cluster() {
  pg_lsclusters --no-header 2>/dev/null | awk -v v="$version" -v f="$1" '
    $1 == v && $2 == "main" { print (f == "port" ? $3 : f == "status" ? $4 : $6) }'
}
answers() { pg_isready -q -h 127.0.0.1 -p "$1"; }
data_directory() {
  psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtq -c 'SHOW data_directory' 2>/dev/null || true
}
free_port() {
  local p
  for p in $(seq 5433 5532); do
    if ! answers "$p" && ! pg_lsclusters --no-header | awk '{print $3}' | grep -qx "$p"; then
      echo "$p"; return
    fi
  done
  echo "no free port in 5433-5532 for PostgreSQL" >&2; exit 1
}
pg_ctl() {  # start/reload/restart through systemd where it runs, directly elsewhere
  if [ -d /run/systemd/system ]; then as_root pg_ctlcluster "$version" main "$1"
  else as_root pg_ctlcluster --skip-systemctl-redirect "$version" main "$1"; fi
}

# The newest version that has a main cluster, else the newest installed.
version="$(pg_lsclusters --no-header 2>/dev/null | awk '$2 == "main" {print $1}' | sort -V | tail -n 1)"
[ -n "$version" ] || version="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"

if [ -z "$(cluster port)" ]; then
  echo "creating PostgreSQL $version cluster main" >&2
  # pg_createcluster picks the first free port from 5432 and runs initdb as the user postgres.
  as_root pg_createcluster "$version" main >/dev/null
fi
port="$(cluster port)"

if [ "$(cluster status)" != "online" ] && answers "$port"; then
  # Another server (another cluster's, a container's) holds the port: move ours to a free one.
  new="$(free_port)"
  echo "port $port is another server's: moving PostgreSQL $version main to $new" >&2
  as_root pg_conftool "$version" main set port "$new"
  port="$new"
fi

hba="/etc/postgresql/$version/main/pg_hba.conf"
if ! as_root grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
  echo "allowing trust auth from 127.0.0.1 in $hba (test machine)" >&2
  as_root sed -i -E '/^(local|host)\s/s/^/# emp: /' "$hba"
  printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' | as_root tee -a "$hba" >/dev/null
  [ "$(cluster status)" = "online" ] && pg_ctl reload
fi
[ "$(cluster status)" = "online" ] || pg_ctl start

for _ in $(seq 1 50); do answers "$port" && break; sleep 0.2; done
want="$(cluster datadir)"
got="$(data_directory "$port")"
if [ "$got" != "$want" ]; then
  echo "the server on 127.0.0.1:$port is not PostgreSQL $version main (data directory" >&2
  echo "'${got:-unknown}', expected '$want'); see /var/log/postgresql/postgresql-$version-main.log" >&2
  exit 1
fi

url="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
mkdir -p "$(dirname "$url_file")"
echo "$url" > "$url_file"
echo "$url"
