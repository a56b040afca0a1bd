#!/usr/bin/env bash
# Three tally nodes on one throwaway PostgreSQL, on this machine, to try several nodes:
#
#   cargo build --release -p tally && deploy/three-nodes.sh
#
# Starts PostgreSQL (Debian's package; installed with apt when missing and run as root) in a
# temporary directory on 127.0.0.1:55432, then `tally serve` on 127.0.0.1:8181, :8182 and :8183,
# all on that database, sharing one token secret. It prints an admin token and which node
# writes, then waits; Ctrl-C stops the nodes and PostgreSQL and removes the directory.
# TALLY (the binary, default target/release/tally), PGPORT and BASE_PORT (default 8180) change
# the defaults. With CHECK=1 it creates an org through node 1, lists it through node 3, and
# stops everything instead of waiting (what the test suite runs).
set -euo pipefail

TALLY=${TALLY:-target/release/tally}
PGPORT=${PGPORT:-55432}
BASE_PORT=${BASE_PORT:-8180}
[ -x "$TALLY" ] || { echo "no tally binary at $TALLY (cargo build --release -p tally)" >&2; exit 1; }
TALLY=$(realpath "$TALLY")

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(pg_bin)" ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q postgresql >/dev/null
  else
    echo "PostgreSQL is not installed: sudo apt-get install -y postgresql" >&2
    exit 1
  fi
fi
PGBIN=$(pg_bin)

ROOT=$(mktemp -d /tmp/tally-three-nodes.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${PIDS[@]}" 2>/dev/null || true
  as_owner "$PGBIN/pg_ctl" -D "$ROOT/pg" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# initdb refuses to run as root: the cluster belongs to the postgres user then.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$ROOT"
as_owner "$PGBIN/initdb" -D "$ROOT/pg" -U tally --auth=trust >/dev/null
as_owner "$PGBIN/pg_ctl" -D "$ROOT/pg" -l "$ROOT/pg/server.log" -w \
  -o "-p $PGPORT -k $ROOT -c listen_addresses=127.0.0.1" start >/dev/null
as_owner "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U tally tally

export TALLY_STORAGE__BACKEND=postgres
export TALLY_STORAGE__POSTGRES_URL="postgresql://tally@127.0.0.1:$PGPORT/tally"
export TALLY_AUTH__HMAC_SECRETS="[\"$(head -c 24 /dev/urandom | base64)\"]"
for n in 1 2 3; do
  mkdir -p "$ROOT/node-$n"
  "$TALLY" serve --listen "127.0.0.1:$((BASE_PORT + n))" --data-dir "$ROOT/node-$n" \
    2>"$ROOT/node-$n.log" &
  PIDS+=("$!")
done
for n in 1 2 3; do
  # A loaded machine may take a while; a node that never gets ready stops the script.
  for i in $(seq 300); do
    curl -fsS "http://127.0.0.1:$((BASE_PORT + n))/readyz" >/dev/null 2>&1 && break
    if [ "$i" = 300 ]; then
      echo "node $n is not ready after 60 s; its log:" >&2
      tail -n 20 "$ROOT/node-$n.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done

# Then until one of them holds the lease (a loaded machine may hand it over once at first).
for i in $(seq 300); do
  roles=$(for n in 1 2 3; do curl -fsS "http://127.0.0.1:$((BASE_PORT + n))/readyz" || true; done)
  [ "$(grep -o '"role":"writer"' <<<"$roles" | wc -l)" = 1 ] \
    && [ "$(grep -o '"role":"follower"' <<<"$roles" | wc -l)" = 2 ] && break
  if [ "$i" = 300 ]; then echo "no single writer after 60 s: $roles" >&2; exit 1; fi
  sleep 0.2
done

TOKEN=$("$TALLY" token --data-dir "$ROOT/node-1" --scope cloud_controller.admin --user-id admin)
echo "PostgreSQL: $TALLY_STORAGE__POSTGRES_URL (logs and data in $ROOT)"
for n in 1 2 3; do
  echo "node $n: http://127.0.0.1:$((BASE_PORT + n))  $(curl -fsS "http://127.0.0.1:$((BASE_PORT + n))/readyz" || echo unready)"
done
echo
echo "export TALLY_TOKEN=$TOKEN"
echo "curl -H \"Authorization: bearer \$TALLY_TOKEN\" -d '{\"name\":\"o\"}' http://127.0.0.1:$((BASE_PORT + 2))/v2/organizations"
if [ "${CHECK:-}" = 1 ]; then
  auth="Authorization: bearer $TOKEN"
  curl -fsS -H "$auth" -d '{"name":"three-nodes"}' "http://127.0.0.1:$((BASE_PORT + 1))/v2/organizations" >/dev/null
  curl -fsS -H "$auth" "http://127.0.0.1:$((BASE_PORT + 3))/v2/organizations?q=name:three-nodes" \
    | grep -q '"total_results":1' || { echo "node 3 does not list what node 1 created" >&2; exit 1; }
  echo "checked: created through node 1, listed through node 3"
  exit 0
fi
echo "Ctrl-C stops everything."
wait
