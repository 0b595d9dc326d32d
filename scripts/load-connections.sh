#!/usr/bin/env bash
# Many connections and the memory they cost, all on 127.0.0.1 and bounded in time, Tollgate at
# its defaults (decision lines at `info`, written to a file):
#   1. HELD (default 10 000) keep-alive connections to the reverse proxy, each with the same
#      valid session (`memory` store; the upstream is nginx answering from memory), opened by a
#      small asyncio client that sends one request on each and keeps them all open; then every
#      held connection sends requests for DURATION seconds. Every answer must be a 200.
#      Then `wrk -c HELD` for DURATION seconds: no socket error, no non-2xx answer.
#   2. Tollgate's resident memory (VmRSS from /proc/PID/status) with no client connection,
#      with the HELD connections open and idle, and after they closed: memory per idle
#      connection.
#   3. Memory per session: SESSIONS logins (default 2 000) at a Tollgate with the `memory`
#      store (VmRSS before and after) and at one with the `redis` store (Redis `used_memory`
#      before and after, and `MEMORY USAGE` of the session keys). The provider is a third
#      Tollgate, a token service of its own, so that the password checks of the logins (argon2)
#      are not in the measured process; its user's password hash has argon2's smallest cost, to
#      keep SESSIONS logins quick.
PACKAGES=(nginx redis-server argon2)
WORK_NAME=load-connections
HELD=${HELD:-10000}
SESSIONS=${SESSIONS:-2000}
DURATION=${DURATION:-10}
source "$(dirname "$0")/load-common.sh"
# Each side of every loopback connection is a file descriptor; children inherit the limit.
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) > HELD + 1000 )) || { echo "the open-file limit $(ulimit -n) is too low for HELD=$HELD" >&2; exit 1; }

upstream=$(free_port)
NGINX_WORKER_CONNECTIONS=$((HELD + 1000)) start_nginx nginx "server { listen 127.0.0.1:$upstream; location / { return 200 \"OK\\n\"; } }"
redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)

password="load-test-password"
password_hash=$(printf '%s' "$password" | argon2 "$(head -c 12 /dev/urandom | base64)" -id -t 1 -m 3 -p 1 -e)
issuer=$(free_port)
declare -A port pid
for store in memory redis; do port[$store]=$(free_port); done
cat > "$work/tollgate-issuer.toml" <<TOML
[server]
listen = "127.0.0.1:$issuer"
admin_listen = "127.0.0.1:$(free_port)"
[session]
secrets = ["load-test-session-secret-load-test-session-secret"]
[token_service]
issuer = "http://127.0.0.1:$issuer"
[[token_service.client]]
client_id = "rp"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:${port[memory]}/callback", "http://127.0.0.1:${port[redis]}/callback"]
[[token_service.user]]
username = "bench"
password_hash = "$password_hash"
email = "bench@example.com"
name = "Bench User"
TOML
$tollgate serve --config "$work/tollgate-issuer.toml" 2>"$work/tollgate-issuer.log" &
pids+=($!)
wait_for "http://127.0.0.1:$issuer/ping"

for store in memory redis; do
    redis_line=""
    [[ "$store" == redis ]] && redis_line="redis_url = \"redis://127.0.0.1:$redis\""
    cat > "$work/tollgate-$store.toml" <<TOML
[server]
listen = "127.0.0.1:${port[$store]}"
admin_listen = "127.0.0.1:$(free_port)"
[session]
store = "$store"
secrets = ["load-test-session-secret-load-test-session-secret"]
$redis_line
[[provider]]
name = "issuer"
issuer = "http://127.0.0.1:$issuer"
client_id = "rp"
client_auth = "none"
[[route]]
upstream = "http://127.0.0.1:$upstream"
provider = "issuer"
[route.headers]
"X-User" = "claim:sub"
"X-Email" = "claim:email"
TOML
    $tollgate serve --config "$work/tollgate-$store.toml" 2>"$work/tollgate-$store.log" &
    pids+=($!); pid[$store]=$!
    wait_for "http://127.0.0.1:${port[$store]}/ping"
done
wait_for "http://127.0.0.1:$upstream/"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
redis_used() { redis-cli -p "$redis" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }

# `logins STORE N`: N logins at that Tollgate with a keep-alive client; prints the last
# session's cookie header.
logins() {
    python3 - "${port[$1]}" "$issuer" "$password" "$2" <<'PY'
import http.client, sys, urllib.parse
rp_port, issuer_port, password, count = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
connections = {port: http.client.HTTPConnection("127.0.0.1", port) for port in (rp_port, issuer_port)}
def request(port, method, path, body=None, cookie="", same_origin=False):
    headers = {"Cookie": cookie} if cookie else {}
    if same_origin:
        # The login form's own page posts it (Fetch Metadata, as a browser sends it).
        headers["Sec-Fetch-Site"] = "same-origin"
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    connections[port].request(method, path, body=body, headers=headers)
    response = connections[port].getresponse()
    response.read()
    cookies = "; ".join(value.split(";")[0] for name, value in response.getheaders() if name.lower() == "set-cookie")
    return response.status, response.getheader("Location", ""), cookies
for _ in range(count):
    status, location, state = request(rp_port, "GET", "/page")
    assert status == 302, f"/page answered {status}"
    query = urllib.parse.urlsplit(location).query
    # The login form's token, in its cookie and its field, as the form's page sets both.
    form_token = "load-test-form-token-load-test-form-token-l"
    status, location, _ = request(issuer_port, "POST", "/authorize", f"{query}&username=bench&password={password}&form_token={form_token}", cookie=f"tollgate_form={form_token}", same_origin=True)
    assert status in (302, 303), f"/authorize answered {status}"
    target = urllib.parse.urlsplit(location)
    status, _, session = request(rp_port, "GET", f"{target.path}?{target.query}", cookie=state)
    assert status in (302, 303) and "tollgate=" in session, f"/callback answered {status}"
print("; ".join(part for part in session.split("; ") if part.startswith("tollgate=")))
PY
}

# Memory per session first, while no client connection is open.
cookie=$(logins memory 1)
wrk -t2 -c32 -d2s -H "Cookie: $cookie" "http://127.0.0.1:${port[memory]}/page" > /dev/null
logins memory 20 > /dev/null
sleep 1
memory_before=$(rss_kb "${pid[memory]}")
logins memory "$SESSIONS" > /dev/null
sleep 1
memory_after=$(rss_kb "${pid[memory]}")
logins redis 20 > /dev/null
redis_before=$(redis_used)
logins redis "$SESSIONS" > /dev/null
redis_after=$(redis_used)
redis_keys=$(redis-cli -p "$redis" --scan --pattern 'tollgate:s:*' | awk 'NR <= 200')
redis_key_bytes=$(for key in $redis_keys; do redis-cli -p "$redis" memory usage "$key"; done | awk '{sum += $1; n++} END {printf "%.0f", sum / n}')

# Then the connections, at the memory-store Tollgate with one of its sessions.
sleep 1
idle_kb=$(rss_kb "${pid[memory]}")
python3 - "${port[memory]}" "$HELD" "$cookie" "${pid[memory]}" "$DURATION" > "$work/held.txt" <<'PY'
import asyncio, sys, time
port, held, cookie, pid, duration = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
request = f"GET /page HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\r\n".encode()
def rss_kb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
async def exchange(reader, writer):
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return status
answers = {"ok": 0, "other": 0, "error": 0}
def count(outcome):
    answers[outcome] += 1
async def open_one(gate):
    async with gate:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            count("ok" if await exchange(reader, writer) == 200 else "other")
            return reader, writer
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            count("error")
            return None
async def keep_asking(connection, deadline):
    reader, writer = connection
    while time.monotonic() < deadline:
        try:
            count("ok" if await exchange(reader, writer) == 200 else "other")
        except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
            count("error")
            return
async def main():
    gate = asyncio.Semaphore(256)
    connections = [c for c in await asyncio.gather(*(open_one(gate) for _ in range(held))) if c]
    opened = answers["ok"]
    await asyncio.sleep(2)
    held_kb = rss_kb()
    deadline = time.monotonic() + duration
    await asyncio.gather(*(keep_asking(c, deadline) for c in connections))
    busy_kb = rss_kb()
    for _, writer in connections:
        writer.close()
    print(len(connections), opened, held_kb, busy_kb, answers["ok"], answers["other"], answers["error"])
asyncio.run(main())
PY
read -r open opened held_kb busy_kb ok other errors < "$work/held.txt"
sleep 2
closed_kb=$(rss_kb "${pid[memory]}")
if (( open != HELD || other != 0 || errors != 0 )); then
    echo "held connections: $open of $HELD open, $other non-200 answers, $errors errors" >&2; tail -5 "$work"/*.log >&2; exit 1
fi
wrk -t2 -c"$HELD" -d"${DURATION}s" --timeout 30s --latency -H "Cookie: $cookie" "http://127.0.0.1:${port[memory]}/page" > "$work/wrk.txt"
if grep -q 'Socket errors\|Non-2xx' "$work/wrk.txt"; then cat "$work/wrk.txt" >&2; exit 1; fi
wrk_rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
wrk_p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")

echo "Tollgate at its defaults, HELD=$HELD SESSIONS=$SESSIONS DURATION=$DURATION on $(nproc) cores, $(date -u +%FT%TZ)"
echo "$HELD keep-alive connections with a memory-store session: all opened and answered 200 ($opened), then $ok answers 200 over ${DURATION}s on them, 0 errors"
echo "wrk -t2 -c$HELD -d${DURATION}s with the session: $wrk_rps req/s, p99 $wrk_p99, no socket error, no non-2xx"
echo "VmRSS: idle $idle_kb kB, with $HELD idle connections $held_kb kB, while they sent requests $busy_kb kB, after they closed $closed_kb kB"
echo "memory per idle keep-alive connection: $(( (held_kb - idle_kb) * 1024 / HELD )) bytes"
echo "memory store: VmRSS $memory_before -> $memory_after kB over $SESSIONS sessions = $(( (memory_after - memory_before) * 1024 / SESSIONS )) bytes per session"
echo "redis store: used_memory $redis_before -> $redis_after bytes over $SESSIONS sessions = $(( (redis_after - redis_before) / SESSIONS )) bytes per session (session key MEMORY USAGE $redis_key_bytes bytes)"
