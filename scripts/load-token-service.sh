#!/usr/bin/env bash
# Token service load test, all on 127.0.0.1 and bounded in time (DURATION seconds per target):
# client_credentials token issuance (POST /token with client_secret_basic; the verified secret
# is cached, so this measures signing and the HTTP path) and /validate of an issued token.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}

dpkg -s wrk >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; }
cargo build --release --locked --bin tollgate >/dev/null
tollgate=./target/release/tollgate

work=$(mktemp -d /tmp/tollgate-load-issuer.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

port=$(free_port)
secret="load-test-client-secret"
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
[token_service]
issuer = "http://127.0.0.1:$port"
[[token_service.client]]
client_id = "machine"
client_secret_hash = "$(printf '%s\n' "$secret" | $tollgate hash-secret)"
grants = ["client_credentials"]
scopes = ["scim"]
source = "myapi"
audience = "odj"
TOML
TOLLGATE_LOG=warn $tollgate serve --config "$work/tollgate.toml" 2>"$work/tollgate.log" &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/ping" && break; sleep 0.1; done

basic=$(printf 'machine:%s' "$secret" | base64 -w0)
token=$(curl -s -H "Authorization: Basic $basic" --data "grant_type=client_credentials&scope=scim" "http://127.0.0.1:$port/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/validate") == 200 ]] || { echo "/validate refused the issued token" >&2; exit 1; }

cat > "$work/token.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=scim"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
run() {
    local name=$1; shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" > "$work/$name.wrk"
    local errors; errors=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$work/$name.wrk")
    if [[ -n "$errors" ]]; then echo "$name: $errors non-2xx responses" >&2; exit 1; fi
    printf '%-34s %12s req/s   p99 %s\n' "$name" "$(awk '/^Requests\/sec:/ {print $2}' "$work/$name.wrk")" "$(awk '$1 == "99%" {print $2}' "$work/$name.wrk")"
}
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $(date -u +%FT%TZ)"
run client-credentials-issuance -s "$work/token.lua" -H "Authorization: Basic $basic" "http://127.0.0.1:$port/token"
run validate -H "Authorization: Bearer $token" "http://127.0.0.1:$port/validate"
