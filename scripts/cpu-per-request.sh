#!/usr/bin/env bash
# Where a proxied request's time goes, beside the moonshot's reference: the CPU time the
# proxy process spends per request, in user space and in the kernel (its `utime` and `stime`
# in /proc, all threads), for nginx proxying with no authentication (one worker, access log
# on, as `load-proxy.sh` runs it) and for Tollgate at its defaults with authentication off
# and with a `cookie` session, in front of the same nginx upstream. wrk -t2 -c32 for DURATION
# seconds per target (default 5), ROUNDS rounds (default 3), all on 127.0.0.1. The kernel's
# share is the sockets' work, alike for any proxy making the same system calls; the user share
# is what a proxy's own code costs.
PACKAGES=(nginx)
WORK_NAME=cpu-per-request
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
source "$(dirname "$0")/load-common.sh"

upstream=$(free_port)
start_nginx nginx "server { listen 127.0.0.1:$upstream; location / { return 200 \"OK\\n\"; } }"
reference=$(free_port)
start_nginx reference "upstream app { server 127.0.0.1:$upstream; keepalive 64; }
  server {
    listen 127.0.0.1:$reference;
    access_log $work/reference/access.log combined;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

port=$(free_port)
password="cpu-per-request-password"
password_hash=$(printf '%s\n' "$password" | $tollgate hash-secret)
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$(free_port)"
[session]
store = "cookie"
secrets = ["cpu-per-request-session-secret-cpu-per-request"]
$(local_provider_toml "$port")
$(bench_user_and_routes_toml "$password_hash" "$upstream")
TOML
$tollgate serve --config "$work/tollgate.toml" 2>"$work/tollgate.log" &
pids+=($!)
tollgate_pid=$!
wait_for "http://127.0.0.1:$port/ping"
wait_for "http://127.0.0.1:$upstream/"
wait_for "http://127.0.0.1:$reference/"
cookie=$(log_in "http://127.0.0.1:$port/page" "127.0.0.1:$port" '^tollgate$')
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "http://127.0.0.1:$port/page") == 200 ]] \
    || { echo "the session was not accepted" >&2; exit 1; }
# nginx's master forks the worker that serves.
reference_worker=$(pgrep -P "$(cat "$work/reference/nginx.pid")")

# PID's user and kernel clock ticks (`utime`, `stime`: the 12th and 13th fields after the
# command name, which is in parentheses and may hold spaces).
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

# `measure NAME PID WRK-ARGS…`: one wrk run; appends "requests user-ticks system-ticks" of PID.
measure() {
    local name=$1 pid=$2; shift 2
    local before after
    before=$(ticks "$pid")
    wrk -t2 -c32 -d"${DURATION}s" "$@" > "$work/$name.wrk"
    after=$(ticks "$pid")
    # A session no longer accepted would measure redirects: any other answer fails the run.
    if grep -q "Non-2xx or 3xx responses\|Socket errors" "$work/$name.wrk"; then
        echo "$name: errors or non-2xx answers" >&2; cat "$work/$name.wrk" >&2; exit 1
    fi
    local requests; requests=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
    echo "$requests $before $after" >> "$work/$name.cpu"
}
echo "wrk -t2 -c32 -d${DURATION}s on $(nproc) cores, $ROUNDS rounds, $(date -u +%FT%TZ)"
for round in $(seq "$ROUNDS"); do
    measure nginx-proxy-no-auth-reference "$reference_worker" "http://127.0.0.1:$reference/"
    measure tollgate-auth-off "$tollgate_pid" "http://127.0.0.1:$port/open/"
    measure tollgate-session-cookie "$tollgate_pid" -H "Cookie: $cookie" "http://127.0.0.1:$port/page"
    echo "round $round done"
done

python3 - "$work" "$(getconf CLK_TCK)" "$DURATION" <<'PY'
import sys
work, ticks, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
print("each round's value, in round order:")
print("| proxy | requests/s | user µs per request | kernel µs per request |")
print("| --- | ---: | ---: | ---: |")
for name in ["nginx-proxy-no-auth-reference", "tollgate-auth-off", "tollgate-session-cookie"]:
    # requests, user and kernel ticks before, user and kernel ticks after
    rows = [[int(x) for x in line.split()] for line in open(f"{work}/{name}.cpu")]
    def per_request(before, after):
        return ", ".join(f"{(row[after] - row[before]) * 1e6 / ticks / row[0]:.1f}" for row in rows)
    rates = ", ".join(f"{row[0] / seconds:.0f}" for row in rows)
    print(f"| {name} | {rates} | {per_request(1, 3)} | {per_request(2, 4)} |")
PY
