#!/usr/bin/env bash
# Checks the packaging (README, "Container image and Kubernetes"):
# 1. renders deploy/kubernetes with `kubectl kustomize`, alone and with the envoy-grpc
#    component (deploy/overlays/envoy-grpc), and validates every object and the examples
#    against the Kubernetes schemas (scripts/validate-manifests.py);
# 2. builds the runtime image's root from deploy/image/runtime-files, as the Dockerfile does,
#    with the binary `cargo test` built (TOLLGATE_BIN), and starts `tollgate serve` in it,
#    read-only, as uid 65532, with the rendered ConfigMap's config and a Secret's files
#    mounted where the Deployment mounts them, against a local discovery document; it must
#    answer /healthz and /readyz, and with the component's override of grpc_listen its gRPC
#    listener must accept. Run as root (unshare, chroot, mount).
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${TOLLGATE_BIN:-target/debug/tollgate}"
venv="${PACKAGING_VENV:-target/packaging-venv}"
[[ -x "$binary" ]] || { echo "packaging: no binary at $binary (run cargo test first)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "packaging: kubectl is missing (Debian: kubernetes-client)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

echo "== packaging: kubectl kustomize deploy/kubernetes, schema validation"
kubectl kustomize deploy/kubernetes >"$work/rendered.yaml"
kubectl kustomize deploy/overlays/envoy-grpc >"$work/rendered-grpc.yaml"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import kubernetes_validate' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
"$venv/bin/python" scripts/validate-manifests.py "$work/rendered.yaml" "$work/rendered-grpc.yaml" \
    "$work/tollgate.toml" \
    deploy/kubernetes/examples/*.yaml
cmp -s "$work/tollgate.toml" deploy/kubernetes/tollgate.toml \
    || { echo "packaging: the rendered ConfigMap differs from deploy/kubernetes/tollgate.toml" >&2; exit 1; }

echo "== packaging: $binary in the image's root, read-only, as uid 65532"
root="$work/root"
deploy/image/assemble-root.sh "$root" "$binary" "$work/tollgate.toml"
# What the Secret `tollgate` would hold.
mkdir -p "$work/secrets"
echo "packaging-check-admin-token-0123456789" >"$work/secrets/admin-token"
echo "packaging-check-session-secret-0123456789abcdef" >"$work/secrets/session-secrets"
echo "packaging-check-client-secret" >"$work/secrets/client-secret"
chmod 0444 "$work/secrets"/*
# A loopback port free now and not handed out before in this run: the kernel may give the same
# ephemeral port to two binds in a row once the first is closed, and two of this check's
# listeners on one port fail it.
free_port() { python3 scripts/free-port.py "$work/ports"; }
public_port=$(free_port)
admin_port=$(free_port)
grpc_port=$(free_port)
provider_port=$(free_port)
# A discovery document for the config's provider, which is pointed here by an override.
issuer="http://127.0.0.1:$provider_port"
python3 - "$provider_port" <<'PY' &
import http.server, json, sys
port = int(sys.argv[1])
issuer = f"http://127.0.0.1:{port}"
documents = {
    "/.well-known/openid-configuration": {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    },
    "/jwks": {"keys": []},
}
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(documents.get(self.path)).encode()
        self.send_response(200 if self.path in documents else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
PY
pids+=($!)
# Mount points the container runtime would create for the Secret volume.
mkdir -p "$root/run/secrets/tollgate"
# The environment a pod gets: the overrides this check needs, and the service links a
# Service named `tollgate` would inject (SPEC §2: never an override, never a reason to stop).
env -i \
    TOLLGATE_SERVER__LISTEN="127.0.0.1:$public_port" \
    TOLLGATE_SERVER__ADMIN_LISTEN="127.0.0.1:$admin_port" \
    TOLLGATE_PROVIDER__0__ISSUER="$issuer" \
    TOLLGATE_FORWARD_AUTH__GRPC_LISTEN="127.0.0.1:$grpc_port" \
    TOLLGATE_SERVICE_HOST=10.96.0.10 TOLLGATE_SERVICE_PORT=4180 TOLLGATE_SERVICE_PORT_HTTP=4180 \
    TOLLGATE_PORT=tcp://10.96.0.10:4180 TOLLGATE_PORT_4180_TCP=tcp://10.96.0.10:4180 \
    TOLLGATE_PORT_4180_TCP_PROTO=tcp TOLLGATE_PORT_4180_TCP_PORT=4180 \
    TOLLGATE_PORT_4180_TCP_ADDR=10.96.0.10 \
    unshare --mount --propagation private sh -c '
        set -e
        mount --bind "$1" "$1"
        mount -o remount,bind,ro "$1"
        mount --bind "$2" "$1/run/secrets/tollgate"
        mount -o remount,bind,ro "$1/run/secrets/tollgate"
        exec chroot --userspec=65532:65532 "$1" /usr/local/bin/tollgate serve --config /etc/tollgate/tollgate.toml
    ' packaging "$root" "$work/secrets" 2>"$work/tollgate.log" &
tollgate=$!
pids+=("$tollgate")

ready=""
for _ in $(seq 1 300); do
    if ! kill -0 "$tollgate" 2>/dev/null; then
        echo "packaging: tollgate exited in the image's root:" >&2
        cat "$work/tollgate.log" >&2
        exit 1
    fi
    if curl -fsS "http://127.0.0.1:$admin_port/readyz" >"$work/readyz" 2>/dev/null; then
        ready=yes
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "packaging: /readyz never answered 200:" >&2
    curl -sS "http://127.0.0.1:$admin_port/readyz" >&2 || true
    cat "$work/tollgate.log" >&2
    exit 1
fi
curl -fsS "http://127.0.0.1:$admin_port/healthz" >/dev/null
# The process is the one started in the root, as uid 65532 with no capability left.
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$tollgate/status")
capabilities=$(awk '/^CapEff:/ { print $2 }' "/proc/$tollgate/status")
[[ "$(readlink "/proc/$tollgate/exe")" == *"/usr/local/bin/tollgate" ]] \
    || { echo "packaging: pid $tollgate is not tollgate" >&2; exit 1; }
[[ "$uids" == "65532 65532 65532 65532" ]] || { echo "packaging: runs as uids $uids" >&2; exit 1; }
[[ "$capabilities" == "0000000000000000" ]] || { echo "packaging: capabilities $capabilities" >&2; exit 1; }
# The public listener answers too: /auth without a credential is a 401.
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$public_port/auth")
[[ "$status" == 401 ]] || { echo "packaging: /auth answered $status, expected 401" >&2; exit 1; }
# The envoy-grpc component's override (the same variable, another address) opened the gRPC
# listener.
python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5).close()' \
    "$grpc_port" || { echo "packaging: no gRPC listener on $grpc_port" >&2; exit 1; }
echo "packaging: ready in the image's root as uid 65532 (read-only root, files: $(cd "$root" && find . -type f | wc -l))"
