#!/usr/bin/env bash
# Runs the image as a deployment would: a `wasaga migrate` container, then
# two hosts on one PostgreSQL with --migrations require; starts sagas on
# both, stops one with SIGTERM (it must drain and exit 0) and checks that
# every saga completed and the other host stays ready.
#   deploy/container/two-hosts.sh [IMAGE] [POSTGRES_ADMIN_URL]
# Needs podman, curl, psql, and PostgreSQL reachable from the host network.
set -euo pipefail
image=${1:-localhost/wasaga:latest}
admin=${2:-postgres://root@127.0.0.1:5432/postgres}
db=wasaga_image_check
url="${admin%/*}/$db"
token=image-check-token
sagas=${SAGAS:-100}

psql -q "$admin" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
cleanup() { podman rm -f wasaga-a wasaga-b >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

echo "== the migrations job"
podman run --rm --network host -e WASAGA_DATABASE_URL="$url" "$image" migrate --check \
  && { echo "a new database cannot be current"; exit 1; }
podman run --rm --network host -e WASAGA_DATABASE_URL="$url" "$image" migrate

host() { # NAME PORT
  podman run -d --name "wasaga-$1" --network host \
    -e WASAGA_DATABASE_URL="$url" -e WASAGA_MIGRATIONS=require -e WASAGA_TOKEN="$token" \
    -e WASAGA_LISTEN="127.0.0.1:$2" -e WASAGA_NODE_ID="$1" -e WASAGA_LOG_FORMAT=text \
    "$image" >/dev/null
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "host $1: $(curl -fsS "http://127.0.0.1:$2/readyz")"
}
echo "== two hosts"
host a 18481
host b 18482
podman exec wasaga-a id -u | grep -qx 65532 && echo "runs as uid 65532"

start() { # PORT
  curl -fsS -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"kind":"image-check","steps":["echo","echo"],"inputs":{"n":1}}' \
    "http://127.0.0.1:$1/v1/sagas" >/dev/null
}
for i in $(seq "$sagas"); do start $(( i % 2 ? 18481 : 18482 )); done

echo "== SIGTERM to host a"
podman stop -t 30 wasaga-a >/dev/null
code=$(podman inspect wasaga-a --format '{{.State.ExitCode}}')
echo "host a exited $code"
[ "$code" = 0 ]
for i in $(seq "$sagas"); do start 18482; done

for _ in $(seq 150); do
  left=$(psql -tA "$url" -c "SELECT count(*) FROM saga_runs WHERE status <> 'completed'")
  [ "$left" = 0 ] && break
  sleep 0.2
done
psql -tA "$url" -c "SELECT status, count(*) FROM saga_runs GROUP BY status"
psql -tA "$url" -c "SELECT executed_by, count(*) FROM saga_step_results GROUP BY executed_by ORDER BY 1"
[ "$left" = 0 ] || { echo "$left saga(s) not completed"; exit 1; }
curl -fsS "http://127.0.0.1:18482/readyz"; echo
echo "ok: $(( 2 * sagas )) sagas completed on the image, host a drained and exited 0"
