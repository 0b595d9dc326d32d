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
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server { listen 127.0.0.1:$upstream; location / { return 200 "OK\n"; } }
}
CONF
/usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)

port=$(free_port)
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
[session]
secrets = ["instructions-session-secret-instructions-session"]
[[provider]]
name = "local"
issuer = "http://127.0.0.1:$port"
client_id = "proxy"
client_auth = "none"
[token_service]
issuer = "http://127.0.0.1:$port"
[[token_service.client]]
client_id = "proxy"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:$port/callback"]
[[route]]
upstream = "http://127.0.0.1:$upstream"
provider = "local"
on_unauthenticated = "pass"
TOML
TOLLGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
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
