#!/usr/bin/env bash
# Reverse-proxy load test, all on 127.0.0.1 and bounded in time (DURATION seconds per target):
#   the upstream (nginx, static answer) reached directly; Tollgate in front of it with
#   authentication off (`pass`), and with a valid session for the cookie, memory and redis
#   stores; and Apache with mod_auth_openidc as relying party (session cookie, mod_proxy to
#   the same upstream). Tollgate's own token service is every login's provider.
PACKAGES=(apache2 libapache2-mod-auth-openidc nginx redis-server)
WORK_NAME=load-proxy
source "$(dirname "$0")/load-common.sh"

# The upstream: nginx answering from memory.
upstream=$(free_port)
start_nginx nginx "server { listen 127.0.0.1:$upstream; location / { return 200 \"OK\\n\"; } }"

# A reference, not a target: nginx as a plain reverse proxy (no authentication at all) to the
# same upstream, in its own process with one worker: what the fastest proxy does on this machine.
# Like Tollgate, which runs at its defaults and so writes a line per decision to a file, the
# reference runs as nginx does out of the box: a line per request in its access log (the
# `combined` format, to a file). The same proxy with its access log turned off is measured
# beside it, and both ratios are printed.
reference=$(free_port)
reference_quiet=$(free_port)
start_nginx reference "upstream app { server 127.0.0.1:$upstream; keepalive 64; }
  server {
    listen 127.0.0.1:$reference;
    access_log $work/reference/access.log combined;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }
  server {
    listen 127.0.0.1:$reference_quiet;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

redis=$(free_port)
redis-server --port "$redis" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)

password="load-test-password"
password_hash=$(printf '%s\n' "$password" | $tollgate hash-secret)
apache_secret="apache-client-secret-for-the-load-test"
apache_secret_hash=$(printf '%s\n' "$apache_secret" | $tollgate hash-secret)
apache=$(free_port)

start_tollgate() {
    local store=$1 port=$2 admin=$3 redis_line=""
    [[ "$store" == redis ]] && redis_line="redis_url = \"redis://127.0.0.1:$redis\""
    cat > "$work/tollgate-$store.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
[session]
store = "$store"
secrets = ["load-test-session-secret-load-test-session-secret"]
$redis_line
$(local_provider_toml "$port")
[[token_service.client]]
client_id = "apache"
client_secret_hash = "$apache_secret_hash"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:$apache/protected/redirect_uri"]
$(bench_user_and_routes_toml "$password_hash" "$upstream")
TOML
    $tollgate serve --config "$work/tollgate-$store.toml" 2>"$work/tollgate-$store.log" &
    pids+=($!)
    wait_for "http://127.0.0.1:$port/ping"
}

declare -A port tollgate_pid
for store in cookie memory redis; do
    port[$store]=$(free_port)
    start_tollgate "$store" "${port[$store]}" "$(free_port)"
    tollgate_pid[$store]=${pids[-1]}
done
wait_for "http://127.0.0.1:$upstream/"

declare -A cookie
for store in cookie memory redis; do
    cookie[$store]=$(log_in "http://127.0.0.1:${port[$store]}/page" "127.0.0.1:${port[$store]}" '^tollgate$')
done

# Apache + mod_auth_openidc as relying party of the cookie instance's token service.
modules=/usr/lib/apache2/modules
mkdir -p "$work/apache"
cat > "$work/apache/apache.conf" <<CONF
ServerRoot "$work/apache"
ServerName 127.0.0.1
PidFile "$work/apache/apache.pid"
Listen 127.0.0.1:$apache
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule authz_user_module $modules/mod_authz_user.so
LoadModule authn_core_module $modules/mod_authn_core.so
LoadModule proxy_module $modules/mod_proxy.so
LoadModule proxy_http_module $modules/mod_proxy_http.so
LoadModule auth_openidc_module $modules/mod_auth_openidc.so
User nobody
Group nogroup
ErrorLog "$work/apache/error.log"
LogLevel warn
# Like Tollgate and nginx here, no cap on requests per client connection (Apache's default
# of 100 would make wrk reconnect and cost the peer throughput).
MaxKeepAliveRequests 0
OIDCProviderMetadataURL http://127.0.0.1:${port[cookie]}/.well-known/openid-configuration
OIDCClientID apache
OIDCClientSecret $apache_secret
OIDCRedirectURI http://127.0.0.1:$apache/protected/redirect_uri
OIDCCryptoPassphrase load-test-passphrase
OIDCScope "openid email"
OIDCProviderTokenEndpointAuth client_secret_basic
<Location /protected/>
    AuthType openid-connect
    Require valid-user
    ProxyPass http://127.0.0.1:$upstream/
</Location>
CONF
chmod -R a+rX "$work"
/usr/sbin/apache2 -f "$work/apache/apache.conf" -DFOREGROUND &
pids+=($!)
wait_for "http://127.0.0.1:$apache/"
apache_cookie=$(log_in "http://127.0.0.1:$apache/protected/page" "127.0.0.1:${port[cookie]}" '^mod_auth_openidc_session$')

check() {
    local name=$1 expected=$2; shift 2
    local status; status=$(curl -s -o /dev/null -w '%{http_code}' "$@")
    if [[ "$status" != "$expected" ]]; then echo "$name answered $status, expected $expected" >&2; tail -5 "$work"/*.log "$work"/*/error.log >&2; exit 1; fi
}
for store in cookie memory redis; do
    check "tollgate $store with session" 200 -H "Cookie: ${cookie[$store]}" "http://127.0.0.1:${port[$store]}/page"
    check "tollgate $store without session" 302 "http://127.0.0.1:${port[$store]}/page"
done
check "apache with session" 200 -H "Cookie: $apache_cookie" "http://127.0.0.1:$apache/protected/page"
check "apache without session" 302 "http://127.0.0.1:$apache/protected/page"

# The targets take turns, ROUNDS times, in the order below and then in reverse (`round`), and a
# ratio is judged by the median of the rounds' own ratios (the ratio of the medians is printed
# beside it): the targets of a round run back to back, so a slow drift of this shared machine
# moves both sides of a round's ratio alike.
ROUNDS=${ROUNDS:-6}
t_upstream() { run upstream-direct "http://127.0.0.1:$upstream/"; }
t_reference() { run nginx-proxy-no-auth-reference "http://127.0.0.1:$reference/"; }
t_reference_quiet() { run nginx-proxy-no-auth-no-access-log "http://127.0.0.1:$reference_quiet/"; }
t_auth_off() { run tollgate-auth-off "http://127.0.0.1:${port[cookie]}/open/"; }
session() {
    local store=$1 profile
    # PERF_STORE=memory (say) records a CPU profile of that Tollgate during its first run.
    profile=$([[ "${PERF_STORE:-}" == "$store" && $number == 1 ]] && echo yes || true)
    if [[ -n "$profile" ]]; then
        perf record -F 999 -g -o "$work/perf.data" -p "${tollgate_pid[$store]}" -- sleep "$DURATION" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    run "tollgate-session-$store" -H "Cookie: ${cookie[$store]}" "http://127.0.0.1:${port[$store]}/page"
    if [[ -n "$profile" ]]; then
        wait "$perf_pid" || true
        perf report -i "$work/perf.data" --no-children --sort dso,sym -g none --percent-limit 0.3 --stdio 2>/dev/null | grep -v '^$' | head -120 > /tmp/tollgate-perf.txt
        echo "profile: /tmp/tollgate-perf.txt"
    fi
}
t_cookie() { session cookie; }
t_memory() { session memory; }
t_redis() { session redis; }
t_apache() { run apache-mod-auth-openidc -H "Cookie: $apache_cookie" "http://127.0.0.1:$apache/protected/page"; }
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $ROUNDS rounds, $(date -u +%FT%TZ)"
for number in $(seq "$ROUNDS"); do
    round "$number" t_upstream t_reference t_reference_quiet t_auth_off t_cookie t_memory t_redis t_apache
done

python3 - "$work" <<'PY'
import statistics, sys
work = sys.argv[1]
names = ["upstream-direct", "nginx-proxy-no-auth-reference", "nginx-proxy-no-auth-no-access-log", "tollgate-auth-off",
         "tollgate-session-cookie", "tollgate-session-memory", "tollgate-session-redis",
         "apache-mod-auth-openidc"]
runs = {name: [float(line) for line in open(f"{work}/{name}.rps")] for name in names}
rps = {name: statistics.median(values) for name, values in runs.items()}
print("median of the rounds:")
for name in names:
    print(f"  {name:<34} {rps[name]:>10.0f} req/s   (rounds: {', '.join(f'{v:.0f}' for v in runs[name])})")
off, peer, nginx = rps["tollgate-auth-off"], rps["apache-mod-auth-openidc"], rps["nginx-proxy-no-auth-reference"]
def per_round(a, b):
    """The median of the rounds' own ratios of a over b."""
    return statistics.median(x / y for x, y in zip(runs[a], runs[b]))
quiet = rps["nginx-proxy-no-auth-no-access-log"]
print(f"reference: nginx proxying without any authentication = {per_round('nginx-proxy-no-auth-reference', 'apache-mod-auth-openidc'):.2f}x Apache "
      f"({per_round('nginx-proxy-no-auth-no-access-log', 'apache-mod-auth-openidc'):.2f}x with its access log off), "
      f"Tollgate auth-off = {per_round('tollgate-auth-off', 'apache-mod-auth-openidc'):.2f}x, auth-off vs nginx {per_round('tollgate-auth-off', 'nginx-proxy-no-auth-reference'):.2f} "
      f"({per_round('tollgate-auth-off', 'nginx-proxy-no-auth-no-access-log'):.2f} with its access log off)")
for store in ("cookie", "memory", "redis"):
    name = f"tollgate-session-{store}"
    value = rps[name]
    print(f"{store:>6} session vs auth-off: {per_round(name, 'tollgate-auth-off'):6.1%}  (target >= 90%; ratio of the medians {value / off:.1%})   "
          f"vs Apache: {per_round(name, 'apache-mod-auth-openidc'):5.2f}x (target >= 3x; {value / peer:.2f}x)   "
          f"vs nginx without authentication: {per_round(name, 'nginx-proxy-no-auth-reference'):.2f} (the moonshot: >= 1; {value / nginx:.2f}; "
          f"with its access log off {per_round(name, 'nginx-proxy-no-auth-no-access-log'):.2f})")
PY
