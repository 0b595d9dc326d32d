#!/usr/bin/env bash
# Load test, all on 127.0.0.1 and bounded in time (DURATION seconds per target, default 10,
# ROUNDS rounds, default 6, every other one in reverse order; a ratio is judged by the median
# of the rounds' own ratios, as in load-token-service.sh: the targets of a round run back to
# back, so a drift of this shared machine between rounds cancels in the round's ratio; the
# ratio of the medians is printed beside it):
#   1. Tollgate GET /ping                 (no authentication: the same server's floor)
#   2. Tollgate GET /auth + RS256 bearer  (forward-auth, positive cache warm)
#   2b. Tollgate GET /ping with the same Authorization header (ignored): the same bytes on
#       the wire as 2, so 2 against 2b is what checking the token costs, apart from carrying it
#   3. Apache + mod_auth_openidc          (AuthType oauth20, the same token checked against a
#                                          local JWKS served over TLS with a test CA)
# Prints requests/s and p99 latency for each (median of the rounds), and the ratios the
# targets are stated in.
PACKAGES=(apache2 libapache2-mod-auth-openidc openssl)
WORK_NAME=load
source "$(dirname "$0")/load-common.sh"

issuer="https://idp.load.test"
node bench/make-token.mjs "$work" "$issuer" api
token=$(cat "$work/token.txt")

# Tollgate: forward-auth with keys from a file.
tollgate_port=$(free_port); tollgate_admin=$(free_port)
cat > "$work/tollgate.toml" <<TOML
[server]
listen = "127.0.0.1:$tollgate_port"
admin_listen = "127.0.0.1:$tollgate_admin"
[session]
secrets = ["load-test-session-secret-load-test-session"]
[[provider]]
name = "load"
issuer = "$issuer"
client_id = "load"
client_auth = "none"
audiences = ["api"]
jwks_file = "$work/jwks.json"
[forward_auth]
provider = "load"
TOML
$tollgate serve --config "$work/tollgate.toml" 2>"$work/tollgate.log" &
pids+=($!)

# Apache with mod_auth_openidc as an OAuth 2.0 resource server; JWKS over TLS (test CA).
apache_port=$(free_port); apache_tls=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=Load Test CA" -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -days 1 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
mkdir -p "$work/htdocs/protected" "$work/htdocs/keys"
cp "$work/jwks.json" "$work/htdocs/keys/jwks.json"
printf 'OK' > "$work/htdocs/protected/index.html"
modules=/usr/lib/apache2/modules
cat > "$work/apache.conf" <<CONF
ServerRoot "$work"
ServerName 127.0.0.1
PidFile "$work/apache.pid"
Listen 127.0.0.1:$apache_port
Listen 127.0.0.1:$apache_tls
LoadModule mpm_event_module $modules/mod_mpm_event.so
LoadModule authz_core_module $modules/mod_authz_core.so
LoadModule authz_user_module $modules/mod_authz_user.so
LoadModule authn_core_module $modules/mod_authn_core.so
LoadModule dir_module $modules/mod_dir.so
LoadModule ssl_module $modules/mod_ssl.so
LoadModule auth_openidc_module $modules/mod_auth_openidc.so
User nobody
Group nogroup
ErrorLog "$work/apache-error.log"
LogLevel warn
# No cap on requests per client connection, as for Tollgate (Apache's default is 100).
MaxKeepAliveRequests 0
DocumentRoot "$work/htdocs"
DirectoryIndex index.html
OIDCCryptoPassphrase load-test-passphrase
OIDCOAuthVerifyJwksUri https://127.0.0.1:$apache_tls/keys/jwks.json
OIDCOAuthSSLValidateServer On
OIDCCABundlePath "$work/ca.pem"
<VirtualHost 127.0.0.1:$apache_tls>
    SSLEngine on
    SSLCertificateFile "$work/server.pem"
    SSLCertificateKeyFile "$work/server.key"
</VirtualHost>
<Location /protected/>
    AuthType oauth20
    Require valid-user
</Location>
CONF
chmod -R a+rX "$work"
/usr/sbin/apache2 -f "$work/apache.conf" -DFOREGROUND &
pids+=($!)

wait_for "http://127.0.0.1:$tollgate_port/ping"
wait_for "http://127.0.0.1:$apache_port/"

check() {
    local name=$1 expected=$2; shift 2
    local status; status=$(curl -s -o /dev/null -w '%{http_code}' "$@")
    if [[ "$status" != "$expected" ]]; then echo "$name answered $status, expected $expected" >&2; cat "$work"/*.log >&2; exit 1; fi
}
bearer=(-H "Authorization: Bearer $token")
check "tollgate /auth" 200 "${bearer[@]}" "http://127.0.0.1:$tollgate_port/auth"
check "tollgate /auth without token" 401 "http://127.0.0.1:$tollgate_port/auth"
check "apache" 200 "${bearer[@]}" "http://127.0.0.1:$apache_port/protected/"
check "apache without token" 401 "http://127.0.0.1:$apache_port/protected/"

# The targets take turns, ROUNDS times, in the order below and then in reverse (`round`), and a
# ratio is judged by the median of the rounds' own ratios (as in load-proxy.sh): a burst of
# load on this shared machine then moves both sides of a round's ratio alike instead of the one
# target that happened to run during it.
ROUNDS=${ROUNDS:-6}
t_ping() { run tollgate-ping "http://127.0.0.1:$tollgate_port/ping"; }
t_auth() { run tollgate-auth-bearer "${bearer[@]}" "http://127.0.0.1:$tollgate_port/auth"; }
t_ping_same_header() { run tollgate-ping-same-header "${bearer[@]}" "http://127.0.0.1:$tollgate_port/ping"; }
t_apache() { run apache-mod-auth-openidc "${bearer[@]}" "http://127.0.0.1:$apache_port/protected/"; }
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $ROUNDS rounds, $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for number in $(seq "$ROUNDS"); do
    round "$number" t_ping t_auth t_ping_same_header t_apache
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work" <<'PY'
import re, statistics, sys
work = sys.argv[1]
names = ["tollgate-ping", "tollgate-auth-bearer", "tollgate-ping-same-header", "apache-mod-auth-openidc"]
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text.strip()).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
runs = {name: [float(line) for line in open(f"{work}/{name}.rps")] for name in names}
p99s = {name: [ms(line) for line in open(f"{work}/{name}.p99")] for name in names}
rps = {name: statistics.median(values) for name, values in runs.items()}
p99 = {name: statistics.median(values) for name, values in p99s.items()}
print("median of the rounds:")
for name in names:
    print(f"  {name:<26} {rps[name]:>10.0f} req/s   p99 {p99[name]:.2f} ms   (rounds: {', '.join(f'{v:.0f}' for v in runs[name])})")
auth, ping, peer = rps["tollgate-auth-bearer"], rps["tollgate-ping"], rps["apache-mod-auth-openidc"]
def per_round(a, b):
    """The rounds' own ratios of a over b, and their median."""
    ratios = [x / y for x, y in zip(runs[a], runs[b])]
    return statistics.median(ratios), ", ".join(f"{r:.1%}" for r in ratios)
ratio, rounds = per_round("tollgate-auth-bearer", "tollgate-ping")
print(f"/auth vs /ping throughput:        {ratio:6.1%}   (target >= 85%; median of the rounds {rounds}; ratio of the medians {auth / ping:.1%})")
same = rps["tollgate-ping-same-header"]
ratio, rounds = per_round("tollgate-auth-bearer", "tollgate-ping-same-header")
print(f"/auth vs /ping, same header:      {ratio:6.1%}   (the token's bytes on both sides; rounds {rounds})")
ratio, rounds = per_round("tollgate-ping-same-header", "tollgate-ping")
print(f"/ping with the header vs without: {ratio:6.1%}   (what carrying the token costs; rounds {rounds})")
ratio, rounds = per_round("tollgate-auth-bearer", "apache-mod-auth-openidc")
print(f"/auth vs Apache throughput:       {ratio:6.2f}x  (target >= 5x; ratio of the medians {auth / peer:.2f}x)")
print(f"p99 /auth vs Apache:              {p99['tollgate-auth-bearer']:.2f} ms vs {p99['apache-mod-auth-openidc']:.2f} ms (target: below)")
PY
