#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: Tollgate runs under
# callgrind at its defaults (decision lines at `info`, written to a file), wrk sends requests
# for DURATION seconds after a warm-up, and the count is divided by the requests wrk made.
# Unlike throughput it hardly moves between runs, so it shows what a change to the request
# path costs or saves. All on 127.0.0.1, bounded in time. One table out:
#   /ping (no authentication: the floor), cached /auth with an RS256 bearer token, a proxied
#   request with authentication off and with a session in each store (cookie, memory, redis;
#   the upstream is nginx answering from memory), and a client_credentials token issuance
#   (ES256 and RS256 keys).
PACKAGES=(nginx valgrind redis-server openssl)
WORK_NAME=instructions
DURATION=${DURATION:-8}
source "$(dirname "$0")/load-common.sh"

upstream=$(free_port)
start_nginx nginx "server { listen 127.0.0.1:$upstream; location / { return 200 \"OK\\n\"; } }"
redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)

issuer="https://idp.load.test"
node bench/make-token.mjs "$work" "$issuer" api
bearer=$(cat "$work/token.txt")
password="instructions-password"
password_hash=$(printf '%s\n' "$password" | $tollgate hash-secret)
secret="instructions-client-secret"
secret_hash=$(printf '%s\n' "$secret" | $tollgate hash-secret)
basic=$(printf 'machine:%s' "$secret" | base64 -w0)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null
cat > "$work/token.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=scim"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA

# `start STORE KEY`: Tollgate under callgrind with that session store and signing key; sets
# $port, $valgrind_pid and $dumps (the callgrind output prefix).
start() {
    local store=$1 key=$2 redis_line=""
    [[ "$store" == redis ]] && redis_line="redis_url = \"redis://127.0.0.1:$redis\""
    port=$(free_port)
    cat > "$work/tollgate-$store.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
[session]
store = "$store"
secrets = ["instructions-session-secret-instructions-session"]
$redis_line
[[provider]]
name = "bearer"
issuer = "$issuer"
client_id = "bearer"
client_auth = "none"
audiences = ["api"]
jwks_file = "$work/jwks.json"
[forward_auth]
provider = "bearer"
[[provider]]
name = "local"
issuer = "http://127.0.0.1:$port"
client_id = "proxy"
client_auth = "none"
[token_service]
issuer = "http://127.0.0.1:$port"
signing_key_file = "$work/$key.pem"
[[token_service.client]]
client_id = "proxy"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:$port/callback"]
[[token_service.client]]
client_id = "machine"
client_secret_hash = "$secret_hash"
grants = ["client_credentials"]
scopes = ["scim"]
source = "myapi"
audience = "odj"
$(bench_user_and_routes_toml "$password_hash" "$upstream")
TOML
    "$tollgate" check --config "$work/tollgate-$store.toml" >/dev/null
    dumps="$work/callgrind-$store.out"
    valgrind --tool=callgrind --callgrind-out-file="$dumps" \
        "$tollgate" serve --config "$work/tollgate-$store.toml" 2>"$work/tollgate-$store.log" &
    valgrind_pid=$!
    pids+=($valgrind_pid)
    # Valgrind starts slowly: up to 60 s.
    for _ in $(seq 600); do curl -sf -o /dev/null "http://127.0.0.1:$port/ping" && break; sleep 0.1; done
    curl -sf -o /dev/null "http://127.0.0.1:$port/ping" || { echo "Tollgate ($store) under callgrind never answered" >&2; tail -5 "$work/tollgate-$store.log" >&2; exit 1; }
}

# `measure NAME EXPECTED-STATUS WRK-ARGS…`: checks one request answers EXPECTED-STATUS, warms up,
# zeroes the counters, runs wrk, dumps, and records NAME's instructions per request.
measure() {
    local name=$1 expected=$2; shift 2
    local status; status=$(curl -s -o /dev/null -w '%{http_code}' "${curl_args[@]}")
    [[ "$status" == "$expected" ]] || { echo "$name: answered $status, expected $expected" >&2; exit 1; }
    wrk -t2 -c16 -d3s "$@" >/dev/null
    callgrind_control -z "$valgrind_pid" >/dev/null 2>&1
    local report; report=$work/case-$(wc -l < "$work/table.md").wrk
    wrk -t2 -c16 -d"${DURATION}s" "$@" > "$report"
    callgrind_control -d "$valgrind_pid" >/dev/null 2>&1
    local errors; errors=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$report")
    [[ -z "$errors" ]] || { echo "$name: $errors non-2xx responses" >&2; exit 1; }
    local requests dump instructions
    requests=$(awk '/requests in/ {print $1}' "$report")
    dump=$(ls -t "$dumps".* | head -1)
    instructions=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    # Of which aws-lc-rs's `sign` (the bare signature), for the token issuances.
    local signature="" share=""
    [[ "$name" == *issuance* ]] && signature=$(callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | awk '!found && /aws_lc_rs::(rsa|ec)::.*::sign \[/ {gsub(",", "", $1); print $1; found = 1}')
    [[ -n "$signature" ]] && share=$(awk -v s="$signature" -v t="$instructions" 'BEGIN {printf "%.1f%%", 100 * s / t}')
    printf '| %s | %d | %s | %s |\n' "$name" "$((instructions / requests))" "$share" "$requests" >> "$work/table.md"
}

: > "$work/table.md"
start cookie rs256
cookie=$(log_in "http://127.0.0.1:$port/page" "127.0.0.1:$port" '^tollgate$')
curl_args=("http://127.0.0.1:$port/ping")
measure "\`GET /ping\` (no authentication: the floor)" 200 "http://127.0.0.1:$port/ping"
curl_args=(-H "Authorization: Bearer $bearer" "http://127.0.0.1:$port/auth")
measure "\`GET /auth\`, RS256 bearer token (cache warm)" 200 "${curl_args[@]}"
curl_args=("http://127.0.0.1:$port/open/x")
measure "proxied, authentication off (\`pass\`)" 200 "${curl_args[@]}"
curl_args=(-H "Cookie: $cookie" "http://127.0.0.1:$port/page")
measure "proxied, session in the \`cookie\` store" 200 "${curl_args[@]}"
curl_args=(-H "Authorization: Basic $basic" --data "grant_type=client_credentials&scope=scim" "http://127.0.0.1:$port/token")
measure "\`client_credentials\` issuance, RS256 key" 200 -s "$work/token.lua" -H "Authorization: Basic $basic" "http://127.0.0.1:$port/token"
kill "$valgrind_pid"; wait "$valgrind_pid" || true

start memory es256
cookie=$(log_in "http://127.0.0.1:$port/page" "127.0.0.1:$port" '^tollgate$')
curl_args=(-H "Cookie: $cookie" "http://127.0.0.1:$port/page")
measure "proxied, session in the \`memory\` store" 200 "${curl_args[@]}"
curl_args=(-H "Authorization: Basic $basic" --data "grant_type=client_credentials&scope=scim" "http://127.0.0.1:$port/token")
measure "\`client_credentials\` issuance, ES256 key" 200 -s "$work/token.lua" -H "Authorization: Basic $basic" "http://127.0.0.1:$port/token"
kill "$valgrind_pid"; wait "$valgrind_pid" || true

start redis es256
cookie=$(log_in "http://127.0.0.1:$port/page" "127.0.0.1:$port" '^tollgate$')
curl_args=(-H "Cookie: $cookie" "http://127.0.0.1:$port/page")
measure "proxied, session in the \`redis\` store" 200 "${curl_args[@]}"
kill "$valgrind_pid"; wait "$valgrind_pid" || true

echo "Tollgate at its defaults under callgrind, wrk -t2 -c16 -d${DURATION}s per case, $(date -u +%FT%TZ)"
echo "| request | user-space instructions per request | of which the signature | requests counted |"
echo "| --- | ---: | ---: | ---: |"
cat "$work/table.md"
