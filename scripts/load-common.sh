# Shared by the load scripts, sourced after they set PACKAGES (Debian packages they need) and
# WORK_NAME: settings, packages, the release build, a work directory removed at exit together
# with every process recorded in `pids`, free loopback ports, nginx, Tollgate's own provider
# as TOML, and one wrk run per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}

missing=()
for package in wrk "${PACKAGES[@]}"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin tollgate >/dev/null
tollgate=${CARGO_TARGET_DIR:-./target}/release/tollgate

work=$(mktemp -d "/tmp/tollgate-$WORK_NAME.XXXXXX")
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# A loopback port free now and not handed out before in this run (the kernel may give one
# ephemeral port to two binds in a row).
free_port() { python3 scripts/free-port.py "$work/ports"; }
wait_for() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 never answered" >&2; exit 1; }

# Starts an nginx with one worker in $work/$1 whose http block ends with $2.
start_nginx() {
    local dir=$work/$1
    mkdir -p "$dir"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${NGINX_WORKER_CONNECTIONS:-1024}; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  $2
}
CONF
    /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" &
    pids+=($!)
}

# TOML for a Tollgate on 127.0.0.1:$1 whose routes log in at its own token service, as the
# public client `proxy`.
local_provider_toml() {
    cat <<TOML
[[provider]]
name = "local"
issuer = "http://127.0.0.1:$1"
client_id = "proxy"
client_auth = "none"
[token_service]
issuer = "http://127.0.0.1:$1"
[[token_service.client]]
client_id = "proxy"
grants = ["authorization_code"]
redirect_uris = ["http://127.0.0.1:$1/callback"]
TOML
}

# TOML for the `bench` user (password hash $1) and the two routes the proxied cases use, to the
# upstream on 127.0.0.1:$2: `/open` with authentication off (`pass`), and everything else behind
# a session at the provider `local_provider_toml` makes, with identity headers.
bench_user_and_routes_toml() {
    cat <<TOML
[[token_service.user]]
username = "bench"
password_hash = "$1"
email = "bench@example.com"
[[route]]
path_prefix = "/open"
upstream = "http://127.0.0.1:$2"
provider = "local"
on_unauthenticated = "pass"
[[route]]
upstream = "http://127.0.0.1:$2"
provider = "local"
[route.headers]
"X-User" = "claim:sub"
"X-Email" = "claim:email"
TOML
}

# `run NAME WRK-ARGS…`: one wrk run; prints requests/s and p99 and appends them to
# $work/NAME.rps and $work/NAME.p99. Any non-2xx/3xx answer fails the script.
run() {
    local name=$1; shift
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" > "$work/$name.wrk"
    local rps p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/$name.wrk")
    p99=$(awk '$1 == "99%" {print $2}' "$work/$name.wrk")
    errors=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$work/$name.wrk")
    if [[ -n "$errors" ]]; then echo "$name: $errors non-2xx responses" >&2; exit 1; fi
    printf '%-34s %12s req/s   p99 %s\n' "$name" "$rps" "$p99"
    echo "$rps" >> "$work/$name.rps"
    echo "$p99" >> "$work/$name.p99"
}

# `round N TARGET…`: round N of a run, each TARGET a shell function that runs one target. Odd
# rounds run them in the order given, even rounds in the reverse order, so over an even number
# of rounds each target runs as often early in a round as late in it: a target is neither
# favoured by a quiet start nor hurt by the load the targets before it left behind (ABBA).
round() {
    local number=$1; shift
    local targets=("$@") index
    echo "round $number"
    if ((number % 2)); then
        for index in "${!targets[@]}"; do "${targets[$index]}"; done
    else
        for ((index = ${#targets[@]} - 1; index >= 0; index--)); do "${targets[$index]}"; done
    fi
}

# `log_in START LOGIN_HOST COOKIE_REGEX`: logs in as `bench` with $password through the local
# login form with curl, starting at START; prints the cookies whose names match COOKIE_REGEX.
log_in() {
    local start=$1 login_host=$2 jar; jar=$(mktemp "$work/jar.XXXXXX")
    local location; location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" "$start")
    local query=${location#*\?}
    # The form first, as a browser is shown it: its token (field and cookie) vouches for the post.
    local token; token=$(curl -s -c "$jar" -b "$jar" "$location" | sed -n 's/.*name="form_token" value="\([^"]*\)".*/\1/p' | head -1)
    location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" -H 'Sec-Fetch-Site: same-origin' --data "$query&username=bench&password=$password&form_token=$token" "http://$login_host/authorize")
    location=$(curl -s -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" "$location")
    awk -v wanted="$3" '$0 !~ /^#( |$)/ && NF >= 7 && $6 ~ wanted { sub(/^#HttpOnly_/, "", $1); printf "%s=%s; ", $6, $7 }' "$jar"
}
