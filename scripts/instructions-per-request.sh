#!/usr/bin/env bash
# User-space instructions per proxied request (auth off), counted by valgrind's callgrind: the
# upstream is nginx answering from memory, Tollgate runs under callgrind, wrk sends requests
# for DURATION seconds after a warm-up, and the count is divided by the requests wrk made.
# Unlike throughput it hardly moves between runs, so it shows what a change to the request
# path costs or saves. All on 127.0.0.1, bounded in time.
PACKAGES=(nginx valgrind)
WORK_NAME=instructions
DURATION=${DURATION:-8}
source "$(dirname "$0")/load-common.sh"

upstream=$(free_port)
start_nginx nginx "server { listen 127.0.0.1:$upstream; location / { return 200 \"OK\\n\"; } }"

port=$(free_port)
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
[session]
secrets = ["instructions-session-secret-instructions-session"]
$(local_provider_toml "$port")
[[route]]
upstream = "http://127.0.0.1:$upstream"
provider = "local"
on_unauthenticated = "pass"
TOML
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$tollgate" serve --config "$work/tollgate.toml" 2>"$work/valgrind.log" &
pids+=($!)
url="http://127.0.0.1:$port/x"
# Valgrind starts slowly: up to 30 s.
for _ in $(seq 300); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
curl -sf -o /dev/null "$url" || { echo "Tollgate under callgrind never answered" >&2; exit 1; }

wrk -t2 -c16 -d3s "$url" >/dev/null
callgrind_control -z >/dev/null 2>&1
wrk -t2 -c16 -d"${DURATION}s" "$url" > "$work/wrk.txt"
callgrind_control -d >/dev/null 2>&1
requests=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
dump=$(ls "$work"/callgrind.out.* | head -1)
instructions=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$requests proxied requests (auth off), $((instructions / requests)) user-space instructions per request"
