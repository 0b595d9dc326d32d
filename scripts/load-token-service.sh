#!/usr/bin/env bash
# Token service load test, all on 127.0.0.1 and bounded in time (DURATION seconds per target):
# client_credentials token issuance (POST /token with client_secret_basic; the verified secret
# is cached, so this measures signing and the HTTP path) and /validate of an issued token.
PACKAGES=()
WORK_NAME=load-issuer
source "$(dirname "$0")/load-common.sh"

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
$tollgate serve --config "$work/tollgate.toml" 2>"$work/tollgate.log" &
pids+=($!)
wait_for "http://127.0.0.1:$port/ping"

basic=$(printf 'machine:%s' "$secret" | base64 -w0)
token=$(curl -s -H "Authorization: Basic $basic" --data "grant_type=client_credentials&scope=scim" "http://127.0.0.1:$port/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/validate") == 200 ]] || { echo "/validate refused the issued token" >&2; exit 1; }

cat > "$work/token.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=scim"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $(date -u +%FT%TZ)"
run client-credentials-issuance -s "$work/token.lua" -H "Authorization: Basic $basic" "http://127.0.0.1:$port/token"
run validate -H "Authorization: Bearer $token" "http://127.0.0.1:$port/validate"
