#!/usr/bin/env bash
# Token service load test, all on 127.0.0.1 and bounded in time (DURATION seconds per target,
# ROUNDS rounds, each target judged by its median), Tollgate at its defaults:
#   1. client_credentials issuance (POST /token with client_secret_basic; the verified secret
#      is cached, so this measures signing and the HTTP path) by Tollgate and by npm
#      `oidc-provider` (e2e/issuer-peer.mjs) issuing the same kind of token (RFC 9068 `at+jwt`,
#      one audience, one scope) with the same key, once with an RS256 key and once with an
#      ES256 key;
#   2. the bare RS256 signature of that same key (`cargo bench --bench token_signing`),
#      against which issuance is compared per CPU second: tokens issued per second of the
#      server's CPU time (/proc/PID/stat) over signatures per second of one thread's CPU time.
#      The bare signature is measured again in every round, right before Tollgate's RS256
#      run, and the ratio is the median of the rounds' ratios: on a shared machine a
#      signature's CPU time moves with the other work (measured here: 430 to 600 µs within a
#      few minutes), so a floor measured once, minutes before, compares two machines;
#   3. the same RS256 issuance by `examples/signing_server.rs`, the least an HTTP server that
#      signs per request does (the signature of a message as long as the token's, a body as
#      long as Tollgate's answer, hyper, nothing else): its rate per CPU second is what the
#      HTTP path and the kernel leave of the bare signature here, and Tollgate's over it is
#      what Tollgate itself costs;
#   4. /validate of an issued RS256 token;
#   5. the login round trip: LOGINS logins at a second Tollgate (a relying party, `cookie`
#      store) whose provider is the RS256 token service over HTTP, each timed from `/callback`
#      in to the redirect out, beside LOGINS authorization-code exchanges made directly at the
#      token service's `/token` and as many `/userinfo` calls (the provider's own times).
PACKAGES=(openssl nodejs)
WORK_NAME=load-issuer
ROUNDS=${ROUNDS:-5}
LOGINS=${LOGINS:-50}
source "$(dirname "$0")/load-common.sh"
[[ -d e2e/node_modules/oidc-provider ]] || (cd e2e && npm ci --silent)

secret="load-test-client-secret"
secret_hash=$(printf '%s\n' "$secret" | $tollgate hash-secret)
password="load-test-password"
password_hash=$(printf '%s\n' "$password" | $tollgate hash-secret)
basic=$(printf 'machine:%s' "$secret" | base64 -w0)
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rs256.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/es256.pem" 2>/dev/null

# The bare signature first, while nothing else of this script runs.
echo "cargo bench --bench token_signing with the RS256 key, $(date -u +%FT%TZ)"
TOKEN_SIGNING_KEY=$work/rs256.pem cargo bench --locked --bench token_signing -- 'rs256/(issue|floor)' > "$work/bench.txt" 2>&1 \
    || { cat "$work/bench.txt" >&2; exit 1; }
# Criterion prints `NAME  time: [low median high]`, the name possibly on its own line.
read -r sign_us floor_us floor_cpu_us < <(python3 - "$work/bench.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
scale = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3}
def median(name):
    match = re.search(re.escape(name) + r"\s+time:\s+\[\S+ \S+ (\S+) (\S+)", text)
    return float(match.group(1)) * scale[match.group(2)]
print(median("rs256/issue: SigningKey::sign"), median("rs256/floor: aws-lc signature only"),
      median("rs256/floor-cpu: aws-lc signature only, thread CPU time"))
PY
)
echo "RS256 SigningKey::sign ${sign_us} µs, bare aws-lc signature ${floor_us} µs, in thread CPU time ${floor_cpu_us} µs (medians)"

declare -A port server_pid
# The reference: an HTTP server that only signs, with the RS256 key.
cargo build --release --locked --example signing_server >/dev/null
port[bare]=$(free_port)
"${CARGO_TARGET_DIR:-./target}/release/examples/signing_server" "${port[bare]}" "$work/rs256.pem" &
pids+=($!); server_pid[bare-http-rs256]=$!
rp=$(free_port)
for alg in rs256 es256; do
    port[$alg]=$(free_port)
    cat > "$work/tollgate-$alg.toml" <<TOML
[server]
listen = "127.0.0.1:${port[$alg]}"
admin_listen = "127.0.0.1:$(free_port)"
[session]
secrets = ["load-test-session-secret-load-test-session-secret"]
[token_service]
issuer = "http://127.0.0.1:${port[$alg]}"
signing_key_file = "$work/$alg.pem"
[[token_service.client]]
client_id = "rp"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:$rp/callback"]
[[token_service.client]]
client_id = "direct"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:9/direct"]
[[token_service.client]]
client_id = "machine"
client_secret_hash = "$secret_hash"
grants = ["client_credentials"]
scopes = ["scim"]
source = "myapi"
audience = "odj"
[[token_service.user]]
username = "bench"
password_hash = "$password_hash"
email = "bench@example.com"
TOML
    $tollgate serve --config "$work/tollgate-$alg.toml" 2>"$work/tollgate-$alg.log" &
    pids+=($!); server_pid[tollgate-$alg]=$!
    port[peer-$alg]=$(free_port)
    (cd e2e && exec node issuer-peer.mjs "${port[peer-$alg]}" "$work/$alg.pem" "$secret") >"$work/peer-$alg.log" 2>&1 &
    pids+=($!); server_pid[peer-$alg]=$!
done
wait_for "http://127.0.0.1:${port[bare]}/"
for alg in rs256 es256; do
    wait_for "http://127.0.0.1:${port[$alg]}/ping"
    wait_for "http://127.0.0.1:${port[peer-$alg]}/.well-known/openid-configuration"
done
# The relying party of the login round trip.
cat > "$work/tollgate-rp.toml" <<TOML
[server]
listen = "127.0.0.1:$rp"
admin_listen = "127.0.0.1:$(free_port)"
[session]
secrets = ["load-test-session-secret-load-test-session-secret"]
[[provider]]
name = "issuer"
issuer = "http://127.0.0.1:${port[rs256]}"
client_id = "rp"
client_auth = "none"
[[route]]
upstream = "http://127.0.0.1:9"
provider = "issuer"
TOML
$tollgate serve --config "$work/tollgate-rp.toml" 2>"$work/tollgate-rp.log" &
pids+=($!)
wait_for "http://127.0.0.1:$rp/ping"

# Every issuer answers with a JWT access token of the expected algorithm and type.
issue() { curl -s -H "Authorization: Basic $basic" --data "grant_type=client_credentials&scope=scim" "http://127.0.0.1:$1/token"; }
for alg in rs256 es256; do
    for target in "${port[$alg]}" "${port[peer-$alg]}"; do
        issue "$target" | python3 -c '
import base64, json, sys
answer = sys.stdin.read()
token = json.loads(answer).get("access_token") or sys.exit(f"no access token: {answer}")
header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
if header["alg"] != sys.argv[1].upper() or header["typ"] != "at+jwt":
    sys.exit(f"unexpected token header {header}")' "$alg" || { echo "issuer on port $target" >&2; exit 1; }
    done
done
token=$(issue "${port[rs256]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
[[ $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:${port[rs256]}/validate") == 200 ]] || { echo "/validate refused the issued token" >&2; exit 1; }

cat > "$work/token.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=scim"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
# User and system CPU ticks of a process, all its threads.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# `issuance NAME SERVER`: one wrk run at NAME's token endpoint; also records the requests and
# the server's user and system CPU ticks over it.
issuance() {
    local name=$1 pid=${server_pid[$1]} before after requests
    before=($(cpu_ticks "$pid"))
    local url="http://127.0.0.1:${port[bare]}/"
    [[ $name == bare-http-rs256 ]] || url="http://127.0.0.1:${port[${name#tollgate-}]}/token"
    run "$name" -s "$work/token.lua" -H "Authorization: Basic $basic" "$url"
    after=($(cpu_ticks "$pid"))
    requests=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
    echo "$requests $((after[0] - before[0])) $((after[1] - before[1]))" >> "$work/$name.cpu"
}
# The bare signature in this thread's CPU time (µs, criterion's median), for this round.
floor_now() {
    TOKEN_SIGNING_KEY=$work/rs256.pem cargo bench --locked --bench token_signing -- 'rs256/floor-cpu' \
        --warm-up-time 1 --measurement-time 3 > "$work/floor-round.txt" 2>&1 || { cat "$work/floor-round.txt" >&2; exit 1; }
    python3 - "$work/floor-round.txt" <<'PY2'
import re, sys
match = re.search(r"rs256/floor-cpu[^\n]*\s+time:\s+\[\S+ \S+ (\S+) (\S+)", open(sys.argv[1]).read())
print(float(match.group(1)) * {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3}[match.group(2)])
PY2
}
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s on $(nproc) cores, $ROUNDS rounds, $(date -u +%FT%TZ)"
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    floor_now >> "$work/floor.rounds"
    for name in tollgate-rs256 bare-http-rs256 peer-rs256 tollgate-es256 peer-es256; do issuance "$name"; done
    run validate-rs256 -H "Authorization: Bearer $token" "http://127.0.0.1:${port[rs256]}/validate"
done

# The login round trip: the relying party's /callback against the token service's own times.
python3 - "$rp" "${port[rs256]}" "$password" "$LOGINS" > "$work/login.txt" <<'PY'
import base64, hashlib, http.client, json, secrets, statistics, sys, time, urllib.parse
rp_port, issuer_port, password, logins = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
connections = {port: http.client.HTTPConnection("127.0.0.1", port) for port in (rp_port, issuer_port)}

def request(port, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    started = time.perf_counter()
    connections[port].request(method, path, body=body, headers=headers)
    response = connections[port].getresponse()
    content = response.read()
    elapsed = time.perf_counter() - started
    jar = {}
    for header, value in response.getheaders():
        if header.lower() == "set-cookie":
            name, _, rest = value.partition("=")
            jar[name] = rest.split(";")[0]
    return response.status, response.getheader("Location", ""), jar, elapsed, content

cookie_header = lambda jar: {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}

def sign_in(query):
    # The login form's token in its cookie and its field, as the form's page sets both.
    form_token = "load-test-form-token-load-test-form-token-l"
    status, location, _, _, _ = request(issuer_port, "POST", "/authorize", query + f"&username=bench&password={password}&form_token={form_token}", {"Sec-Fetch-Site": "same-origin", "Cookie": f"tollgate_form={form_token}"})
    assert status in (302, 303), f"/authorize answered {status}"
    return urllib.parse.urlsplit(location)

callback, token, userinfo = [], [], []
for _ in range(logins):
    # Through the relying party: /page, the token service's login form, /callback (timed).
    status, location, rp_jar, _, _ = request(rp_port, "GET", "/page")
    assert status == 302, f"/page answered {status}"
    target = sign_in(urllib.parse.urlsplit(location).query)
    status, location, jar, elapsed, _ = request(rp_port, "GET", f"{target.path}?{target.query}", headers=cookie_header(rp_jar))
    assert status in (302, 303) and "tollgate" in jar, f"/callback answered {status}"
    callback.append(elapsed)
    # Directly: the same grant at /token as a public client with PKCE, then /userinfo (timed).
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:9/direct"
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "direct", "redirect_uri": redirect,
        "scope": "openid email", "state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge, "code_challenge_method": "S256"})
    code = urllib.parse.parse_qs(sign_in(query).query)["code"][0]
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "client_id": "direct", "code_verifier": verifier})
    status, _, _, elapsed, content = request(issuer_port, "POST", "/token", body)
    assert status == 200, f"/token answered {status}"
    token.append(elapsed)
    access_token = json.loads(content)["access_token"]
    status, _, _, elapsed, _ = request(issuer_port, "GET", "/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert status == 200, f"/userinfo answered {status}"
    userinfo.append(elapsed)
ms = lambda values: statistics.median(values) * 1e3
print(f"{ms(callback):.3f} {ms(token):.3f} {ms(userinfo):.3f}")
PY
read -r callback_ms token_ms userinfo_ms < "$work/login.txt"

python3 - "$work" "$ROUNDS" "$(getconf CLK_TCK)" "$sign_us" "$floor_us" "$floor_cpu_us" "$callback_ms" "$token_ms" "$userinfo_ms" "$LOGINS" <<'PY'
import statistics, sys
work, rounds, tick = sys.argv[1], sys.argv[2], int(sys.argv[3])
sign_us, floor_us, floor_cpu_us, callback_ms, token_ms, userinfo_ms = map(float, sys.argv[4:10])
logins = sys.argv[10]
rps = lambda name: statistics.median(float(line) for line in open(f"{work}/{name}.rps"))
def per_cpu_second(name):
    requests = cpu = 0
    for line in open(f"{work}/{name}.cpu"):
        r, u, s = map(int, line.split()); requests += r; cpu += u + s
    return requests / (cpu / tick)
# Per round: Tollgate's RS256 tokens per CPU second over that round's bare signatures per CPU
# second (whole process: user + system), and over user time only (the kernel's side of the
# loopback sockets left out, shown as its share).
floors = [float(line) for line in open(f"{work}/floor.rounds")]
rounds_rs256 = [tuple(map(int, line.split())) for line in open(f"{work}/tollgate-rs256.cpu")]
rounds_bare = [tuple(map(int, line.split())) for line in open(f"{work}/bare-http-rs256.cpu")]
ratios = [r / ((u + s) / tick) * floor / 1e6 for (r, u, s), floor in zip(rounds_rs256, floors)]
user_ratios = [r / (u / tick) * floor / 1e6 for (r, u, s), floor in zip(rounds_rs256, floors)]
system_share = sum(s for _, _, s in rounds_rs256) / sum(u + s for _, u, s in rounds_rs256)
bare_ratios = [r / ((u + s) / tick) * floor / 1e6 for (r, u, s), floor in zip(rounds_bare, floors)]
bare_system_share = sum(s for _, _, s in rounds_bare) / sum(u + s for _, u, s in rounds_bare)
over_bare = [(r / (u + s)) / (rb / (ub + sb)) for (r, u, s), (rb, ub, sb) in zip(rounds_rs256, rounds_bare)]
print(f"median of {rounds} rounds:")
for name in ("tollgate-rs256", "bare-http-rs256", "peer-rs256", "tollgate-es256", "peer-es256"):
    print(f"  {name:<16} {rps(name):>9.0f} tokens/s   {per_cpu_second(name):>7.0f} tokens per CPU second")
print(f"  {'validate-rs256':<16} {rps('validate-rs256'):>9.0f} req/s")
print(f"bare RS256 signature of the same key, one core: {1e6 / floor_us:.0f}/s wall-clock, {1e6 / floor_cpu_us:.0f} per CPU second; "
      f"SigningKey::sign {1e6 / sign_us:.0f}/s wall-clock ({floor_us / sign_us:.1%} of the bare rate)")
print(f"bare RS256 signature per round (thread CPU time): {', '.join(f'{f:.0f} µs' for f in floors)}")
print(f"RS256 issuance per CPU second (the whole server: HTTP, secret check, claims, log line, kernel time) vs the bare "
      f"signature per CPU second of the same round: median {statistics.median(ratios):.1%} "
      f"(rounds {', '.join(f'{r:.1%}' for r in ratios)}; target >= 90%); per user CPU second "
      f"{statistics.median(user_ratios):.1%}; system time {system_share:.1%} of the server's CPU time; "
      f"against the floor measured once before the rounds {per_cpu_second('tollgate-rs256') * floor_cpu_us / 1e6:.1%}")
print(f"the same RS256 issuance by examples/signing_server.rs (an HTTP server that only signs) vs the bare signature per "
      f"CPU second: median {statistics.median(bare_ratios):.1%} (rounds {', '.join(f'{r:.1%}' for r in bare_ratios)}; "
      f"system time {bare_system_share:.1%}): what HTTP and the kernel leave here; Tollgate per CPU second over it: median "
      f"{statistics.median(over_bare):.1%} (rounds {', '.join(f'{r:.1%}' for r in over_bare)})")
for alg, target in (("rs256", 1), ("es256", 5)):
    print(f"{alg.upper()} Tollgate / oidc-provider: {rps('tollgate-' + alg) / rps('peer-' + alg):.2f}x tokens/s "
          f"(target >= {target}x), {per_cpu_second('tollgate-' + alg) / per_cpu_second('peer-' + alg):.2f}x per CPU second")
print(f"login round trip (medians of {logins}): /callback {callback_ms:.2f} ms; the provider's /token {token_ms:.2f} ms "
      f"and /userinfo {userinfo_ms:.2f} ms; Tollgate's share beyond /token {callback_ms - token_ms:.2f} ms "
      f"(target < 2 ms), beyond /token and /userinfo {callback_ms - token_ms - userinfo_ms:.2f} ms")
PY
