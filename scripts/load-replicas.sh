#!/usr/bin/env bash
# Many replicas (SPEC §12, issue 12), all on 127.0.0.1 and bounded in time:
#   1. `/auth` with a session cookie (session store `redis`) through Debian's haproxy (round
#      robin, no stickiness) to three Tollgate replicas, and through the same haproxy to one
#      replica, on the same Redis: req/s and their ratio. One machine, so the figure is the
#      overhead of several replicas, not how they scale. The targets take turns ROUNDS times
#      (default 3) and each is judged by its median.
#   2. Redis round trips per cached request (`INFO commandstats` over the wrk runs), per login
#      and per refresh (`MONITOR` lines over LOGINS logins and REFRESHES refreshes, a MULTI/EXEC
#      block counted once, commands a Lua script runs not counted).
#   3. Memory per session in Redis: `MEMORY USAGE` of the session keys, plus the index sets'
#      `MEMORY USAGE` divided among the sessions they hold.
# The provider is Tollgate's own token service (in-process in every replica, `store = "redis"`,
# RS256 key shared by the replicas, users with a name, an email, two groups and two claims);
# logins are driven with curl through haproxy (login form), so each step of a login may land
# on a different replica. A login's round trips therefore include the token service's own
# (its code and grant in Redis); the script prints them apart from the session store's.
PACKAGES=(haproxy redis-server openssl)
WORK_NAME=load-replicas
source "$(dirname "$0")/load-common.sh"
LOGINS=${LOGINS:-20}
REFRESHES=${REFRESHES:-10}
ROUNDS=${ROUNDS:-3}

redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
rcli() { redis-cli -p "$redis" "$@"; }
for _ in $(seq 50); do rcli ping >/dev/null 2>&1 && break; sleep 0.1; done

lb3=$(free_port)
lb1=$(free_port)
issuer="http://127.0.0.1:$lb3"
password="load-test-password"
password_hash=$(printf '%s\n' "$password" | $tollgate hash-secret)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/issuer-key.pem" 2>/dev/null

declare -a port admin replica_pid
for index in 1 2 3; do port[$index]=$(free_port); admin[$index]=$(free_port); done

# Starts replica $1; $2 is added to its [session] section.
start_replica() {
    local index=$1 session_extra=${2:-} users="" user
    for user in 1 2 3 4 5; do
        users+="[[token_service.user]]
username = \"bench$user\"
password_hash = \"$password_hash\"
name = \"Bench User $user\"
email = \"bench$user@example.com\"
groups = [\"platform-engineering\", \"on-call\"]
claims = { department = \"Platform\", employee_id = \"E10$user\" }
"
    done
    cat > "$work/replica-$index.toml" <<TOML
[server]
listen = "127.0.0.1:${port[$index]}"
admin_listen = "127.0.0.1:${admin[$index]}"
public_url = "$issuer"
[session]
store = "redis"
redis_url = "redis://127.0.0.1:$redis"
secrets = ["load-test-session-secret-load-test-session-secret"]
$session_extra
[[provider]]
name = "local"
issuer = "$issuer"
client_id = "gateway"
client_auth = "none"
[forward_auth]
provider = "local"
[token_service]
issuer = "$issuer"
signing_key_file = "$work/issuer-key.pem"
store = "redis"
[[token_service.client]]
client_id = "gateway"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["$issuer/callback"]
[[token_service.client]]
client_id = "probe"
grants = ["authorization_code", "refresh_token"]
redirect_uris = ["http://127.0.0.1/probe"]
$users
TOML
    $tollgate serve --config "$work/replica-$index.toml" 2>>"$work/replica-$index.log" &
    pids+=($!)
    replica_pid[$index]=$!
    wait_for "http://127.0.0.1:${port[$index]}/ping"
}
for index in 1 2 3; do start_replica "$index"; done

cat > "$work/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    # A replica restarted for the refresh phase closed haproxy's idle connections to it.
    retries 3
    retry-on all-retryable-errors
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend three
    bind 127.0.0.1:$lb3
    default_backend three
frontend one
    bind 127.0.0.1:$lb1
    default_backend one
backend three
    balance roundrobin
    server r1 127.0.0.1:${port[1]}
    server r2 127.0.0.1:${port[2]}
    server r3 127.0.0.1:${port[3]}
backend one
    server r1 127.0.0.1:${port[1]}
CFG
haproxy -db -f "$work/haproxy.cfg" 2>"$work/haproxy.log" &
pids+=($!)
wait_for "http://127.0.0.1:$lb3/ping"
wait_for "http://127.0.0.1:$lb1/ping"

# Logs user bench$1 in through haproxy (signin, login form, callback: each may reach another
# replica); prints the session cookie as a Cookie header.
log_in() {
    local jar location
    jar=$(mktemp -p "$work")
    location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" "$issuer/signin?rd=/")
    # The form first, as a browser is shown it: its token (field and cookie) vouches for the post.
    local token; token=$(curl -s -c "$jar" -b "$jar" "$location" | sed -n 's/.*name="form_token" value="\([^"]*\)".*/\1/p' | head -1)
    location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" \
        -H 'Sec-Fetch-Site: same-origin' \
        --data "${location#*\?}&username=bench$1&password=$password&form_token=$token" "$issuer/authorize")
    curl -s -o /dev/null -c "$jar" -b "$jar" "$location"
    awk '$0 !~ /^#( |$)/ && NF >= 7 && $6 ~ /^tollgate/ && $6 != "tollgate_form" { printf "%s=%s; ", $6, $7 }' "$jar"
}

check() {
    local name=$1 expected=$2; shift 2
    local status; status=$(curl -s -o /dev/null -w '%{http_code}' "$@")
    if [[ "$status" != "$expected" ]]; then echo "$name answered $status, expected $expected" >&2; tail -5 "$work"/*.log >&2; exit 1; fi
}

cookie=$(log_in 1)
for _ in 1 2 3; do check "three replicas with a session" 200 -H "Cookie: $cookie" "http://127.0.0.1:$lb3/auth"; done
check "one replica with a session" 200 -H "Cookie: $cookie" "http://127.0.0.1:$lb1/auth"
check "without a session" 401 "http://127.0.0.1:$lb3/auth"

# Sum of every command's calls in INFO commandstats.
commands() { rcli info commandstats | awk -F'[=,]' '/^cmdstat_/ {sum += $2} END {print sum + 0}'; }
# Requests wrk completed in its last run for NAME.
requests() { awk '/requests in/ {print $1}' "$work/$1.wrk"; }

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $ROUNDS rounds, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# Requests replica $1 allowed so far.
allowed() { curl -s "http://127.0.0.1:${admin[$1]}/metrics" | awk '/^tollgate_requests_total\{/ && /role="forward_auth"/ && /result="allow"/ {print $2}'; }
declare -a served=(0 0 0 0) before_run
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for target in three one; do
        if [[ $target == three ]]; then lb=$lb3; else lb=$lb1; fi
        for index in 1 2 3; do before_run[$index]=$(allowed "$index"); done
        before=$(commands)
        run "auth-session-$target-replicas" -H "Cookie: $cookie" "http://127.0.0.1:$lb/auth"
        after=$(commands)
        echo "$((after - before - 1)) $(requests "auth-session-$target-replicas")" >> "$work/cached-$target.calls"
        if [[ $target == three ]]; then
            for index in 1 2 3; do served[$index]=$((served[index] + $(allowed "$index") - before_run[index])); done
        fi
    done
done
per_replica="${served[1]} ${served[2]} ${served[3]}"

# Redis commands sent while $1 runs, as MONITOR saw them; written to $work/$2.monitor.
monitored() {
    local name=$2
    redis-cli -p "$redis" monitor > "$work/$name.monitor" &
    local monitor=$!
    sleep 0.5
    "$1"
    sleep 0.5
    kill "$monitor"
    wait "$monitor" 2>/dev/null || true
}
logins() { for n in $(seq "$LOGINS"); do cookies+=("$(log_in $((n % 5 + 1)))"); done; }
cookies=()
monitored logins login
for c in "${cookies[@]}"; do check "a new session" 200 -H "Cookie: $c" "http://127.0.0.1:$lb3/auth"; done

# Memory per session: the session keys and their share of the index sets.
sessions=$(rcli --scan --pattern 'tollgate:s:*' | wc -l)
session_bytes=0; session_length=0
for key in $(rcli --scan --pattern 'tollgate:s:*'); do
    session_bytes=$((session_bytes + $(rcli memory usage "$key" samples 0)))
    session_length=$((session_length + $(rcli strlen "$key")))
done
index_bytes=0
for key in tollgate:all $(rcli --scan --pattern 'tollgate:sub:*') $(rcli --scan --pattern 'tollgate:sid:*'); do
    index_bytes=$((index_bytes + $(rcli memory usage "$key" samples 0)))
done

# The tokens those sessions hold, as the token service issues them to a client (`probe`).
verifier="load-test-code-verifier-load-test-code-verifier-0123"
challenge=$(printf '%s' "$verifier" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=')
# The login form's token in its cookie and its field, as the form's page sets both.
form_token="load-test-form-token-load-test-form-token-l"
location=$(curl -s -o /dev/null -w '%{redirect_url}' -H 'Sec-Fetch-Site: same-origin' -H "Cookie: tollgate_form=$form_token" --data "response_type=code&client_id=probe&redirect_uri=http%3A%2F%2F127.0.0.1%2Fprobe&scope=openid%20profile%20email&state=s&nonce=n&code_challenge=$challenge&code_challenge_method=S256&username=bench1&password=$password&form_token=$form_token" "$issuer/authorize")
code=$(sed 's/.*[?&]code=\([^&]*\).*/\1/' <<<"$location")
curl -s --data "grant_type=authorization_code&code=$code&redirect_uri=http%3A%2F%2F127.0.0.1%2Fprobe&client_id=probe&code_verifier=$verifier" "$issuer/token" > "$work/tokens.json"
token_sizes=$(jq -r '"RS256 ID token \(.id_token | length) B, access token \(.access_token | length) B, refresh token \(.refresh_token | length) B"' "$work/tokens.json")

# Refresh: the replicas again, with every session due for refresh two seconds after its login
# (refresh_before just under the 30-minute token lifetime); each new session then gets one
# request through haproxy, which refreshes it.
for index in 1 2 3; do
    kill "${replica_pid[$index]}"; wait "${replica_pid[$index]}" 2>/dev/null || true
    start_replica "$index" 'refresh_before = "1798s"'
done
refreshed() { curl -s "http://127.0.0.1:${admin[$1]}/metrics" | awk '/^tollgate_refreshes_total\{result="ok"\}/ {print $2}'; }
# One warm-up session per replica, refreshed on it before counting, so that the counted
# refreshes do not include the restarted replicas' first connections and script loads.
warm=()
for index in 1 2 3; do warm+=("$(log_in "$index")"); done
cookies=()
for n in $(seq "$REFRESHES"); do cookies+=("$(log_in $((n % 5 + 1)))"); done
sleep 3
for index in 1 2 3; do check "a warm-up refresh" 200 -H "Cookie: ${warm[index - 1]}" "http://127.0.0.1:${port[$index]}/auth"; done
refresh_all() { for c in "${cookies[@]}"; do check "a refreshed session" 200 -H "Cookie: $c" "http://127.0.0.1:$lb3/auth"; done; }
monitored refresh_all refresh
total_refreshes=0
for index in 1 2 3; do total_refreshes=$((total_refreshes + $(refreshed "$index"))); done
if ((total_refreshes != REFRESHES + 3)); then echo "$total_refreshes refreshes, expected $((REFRESHES + 3))" >&2; exit 1; fi

python3 - "$work" "$LOGINS" "$REFRESHES" "$sessions" "$session_bytes" "$session_length" "$index_bytes" "$per_replica" "$token_sizes" <<'PY'
import re, statistics, sys
work, logins, refreshes, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
session_bytes, session_length, index_bytes = (int(v) for v in sys.argv[5:8])
per_replica, token_sizes = sys.argv[8].split(), sys.argv[9]

def median_rps(name):
    return statistics.median(float(line) for line in open(f"{work}/{name}.rps"))

def cached(target):
    calls = requests = 0
    for line in open(f"{work}/cached-{target}.calls"):
        c, r = line.split()
        calls, requests = calls + int(c), requests + int(r)
    return calls / requests

def round_trips(name):
    """Commands Tollgate sent while MONITOR ran: a MULTI..EXEC block is one round trip;
    commands a Lua script runs are not sent. Classified by the keys they touch."""
    kinds = {"token service": 0, "session store": 0, "other": 0}
    in_multi, block = {}, {}
    line_re = re.compile(r'^\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"(.*)$')
    for line in open(f"{work}/{name}.monitor"):
        match = line_re.match(line.strip())
        if not match:
            continue
        client, command, rest = match.groups()
        if client == "lua":
            continue
        command = command.upper()
        if command == "MULTI":
            in_multi[client], block[client] = True, rest
            continue
        if in_multi.get(client):
            block[client] += rest
            if command not in ("EXEC", "DISCARD"):
                continue
            in_multi[client], rest = False, block[client]
        if '"tollgate:ts:' in rest:
            kinds["token service"] += 1
        elif '"tollgate:' in rest:
            kinds["session store"] += 1
        else:
            kinds["other"] += 1
    return kinds

three, one = median_rps("auth-session-three-replicas"), median_rps("auth-session-one-replicas")
print()
print("median of the rounds (/auth with a redis session, through haproxy):")
print(f"  3 replicas  {three:>10.0f} req/s   (answered by each replica: {', '.join(per_replica)})")
print(f"  1 replica   {one:>10.0f} req/s")
print(f"  3 / 1       {three / one:>10.2f}")
print("Redis round trips:")
print(f"  per cached request: {cached('three'):.5f} (3 replicas), {cached('one'):.5f} (1 replica)")
for name, count in (("login", logins), ("refresh", refreshes)):
    kinds = round_trips(name)
    total = sum(kinds.values())
    parts = ", ".join(f"{kind} {value / count:.1f}" for kind, value in kinds.items())
    print(f"  per {name:<8} {total / count:5.1f}  ({parts}; over {count})")
print("Memory per session in Redis:")
print(f"  tokens: {token_sizes}")
print(f"  session key: {session_bytes / sessions:.0f} B (MEMORY USAGE; sealed value {session_length / sessions:.0f} B)"
      f" + index sets {index_bytes / sessions:.0f} B = {(session_bytes + index_bytes) / sessions:.0f} B per session (over {sessions})")
PY
