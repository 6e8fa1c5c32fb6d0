#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the storage tests (Debian's
# `postgresql` package; nothing is installed or left behind).
#
#   scripts/pg-test-cluster.sh start DIR   initdb + pg_ctl start in DIR (a new
#                                          or empty directory), on a free
#                                          loopback port and a socket in DIR;
#                                          writes DIR/env with the variables
#                                          the tests read, and prints them
#   scripts/pg-test-cluster.sh stop DIR    stops it (DIR can then be removed)
#
# The tests read POLYTUNE_TEST_PG_URL (a role with CREATEDB and a password,
# so each test gets its own database and the wrong-password case is real)
# and POLYTUNE_TEST_PG_RESTART (a command that restarts the server).
# Run as root, the server runs as the `postgres` user (initdb refuses root).
set -euo pipefail
cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
  echo "usage: $0 start|stop DIR" >&2
  exit 2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
  echo "$0: no PostgreSQL server binaries under /usr/lib/postgresql (install Debian's postgresql)" >&2
  exit 3
fi
# Absolute, and run from / : the server user may not enter the caller's
# working directory (a root-only temp dir).
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd /
run_pg() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    if [[ $(id -u) == 0 ]]; then chown postgres "$dir"; fi
    port=""
    for _ in $(seq 1 50); do
      p=$((20000 + RANDOM % 20000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
    done
    [[ -n "$port" ]] || { echo "$0: no free port found" >&2; exit 1; }
    run_pg "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
    run_pg "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE ROLE polytune LOGIN CREATEDB PASSWORD 'polytune-test'" \
      -c "CREATE DATABASE polytune OWNER polytune" >/dev/null
    restart="$bin/pg_ctl -D $dir/data -l $dir/data/server.log -w -t 60 -m fast restart"
    if [[ $(id -u) == 0 ]]; then restart="runuser -u postgres -- $restart"; fi
    cat >"$dir/env" <<ENV
export POLYTUNE_TEST_PG_URL='postgresql://polytune:polytune-test@127.0.0.1:$port/polytune'
export POLYTUNE_TEST_PG_RESTART='$restart'
ENV
    cat "$dir/env"
    ;;
  stop)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
      run_pg "$bin/pg_ctl" -D "$dir/data" -w -m immediate stop >/dev/null || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
