#!/usr/bin/env python3
"""Validates the rendered Kubernetes base and the examples (run by scripts/packaging.sh).

Every object is checked against the Kubernetes JSON schemas of the PyPI package
kubernetes-validate, strictly (unknown fields are errors). Objects of the two CRDs we ship,
ServiceMonitor and HTTPRoute, have no schema there: they are named below, skipped by the
schema check on purpose, and checked for what Tollgate relies on instead. Any other kind
without a schema is an error. Then the objects are checked against each other: every
selector selects the Deployment's pods, probes and monitors use the admin port, the pod runs
non-root on a read-only root file system without capabilities, and every secret the config
names is a file of the mounted Secret. The base rendered with the envoy-grpc component
(deploy/overlays/envoy-grpc) passes the same checks and opens port 9191 (`grpc`) on the pod,
the Service and the NetworkPolicy, with `forward_auth.grpc_listen` set to it by its
environment override.

usage: validate-manifests.py RENDERED.yaml RENDERED_GRPC.yaml CONFIG_OUT EXAMPLE.yaml...
"""

import sys
import tomllib

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.37.0"
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}
CONFIG_MOUNT = "/etc/tollgate"
SECRET_MOUNT = "/run/secrets/tollgate"
NAME = "tollgate"

problems = []


def check(condition, message):
    if not condition:
        problems.append(message)


def load(path):
    with open(path) as stream:
        return [item for item in yaml.safe_load_all(stream) if item]


def schema_check(path, resource):
    kind, api = resource["kind"], resource["apiVersion"]
    what = f"{path}: {kind} {resource['metadata']['name']}"
    if (api, kind) in CRDS:
        print(f"schema skipped (CRD {api} {kind}): {what}")
        return
    try:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        print(f"schema ok: {what}")
    except kubernetes_validate.ValidationError as error:
        path_text = ".".join(str(part) for part in error.path)
        problems.append(f"{what}: {path_text}: {error.message}")
    except kubernetes_validate.SchemaNotFoundError:
        problems.append(f"{what}: no schema for {api} {kind} (and not a CRD named here)")


def one(resources, kind):
    found = [r for r in resources if r["kind"] == kind]
    check(len(found) == 1, f"the base must hold one {kind}, holds {len(found)}")
    return found[0] if found else {}


GRPC_PORT = 9191
GRPC_OVERRIDE = "TOLLGATE_FORWARD_AUTH__GRPC_LISTEN"


def base_checks(resources, grpc=False):
    kinds = {r["kind"] for r in resources}
    expected = {
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor",
    }
    check(kinds == expected, f"the base holds {sorted(kinds)}, expected {sorted(expected)}")
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]

    def selects(selector, what):
        check(
            all(labels.get(k) == v for k, v in selector.items()) and selector,
            f"{what} selector {selector} does not select the pods {labels}",
        )

    selects(deployment["spec"]["selector"]["matchLabels"], "Deployment")
    service = one(resources, "Service")
    selects(service["spec"]["selector"], "Service")
    selects(one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    selects(one(resources, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], "NetworkPolicy")
    target = one(resources, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    check(
        (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"]),
        f"the HorizontalPodAutoscaler scales {target}, not the Deployment",
    )
    monitor = one(resources, "ServiceMonitor")
    service_labels = service["metadata"]["labels"]
    check(
        all(service_labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()),
        "the ServiceMonitor does not select the Service",
    )
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        check(endpoint["port"] == "admin", f"ServiceMonitor scrapes port {endpoint['port']}, not admin")
        check(endpoint.get("path") == "/metrics", "ServiceMonitor must scrape /metrics")
    check(
        service_ports.get("admin", {}).get("targetPort") == "admin"
        and service_ports.get("http", {}).get("targetPort") == "http",
        "the Service must expose the container ports http and admin",
    )
    check(
        ("grpc" in service_ports) == grpc
        and (not grpc or service_ports["grpc"].get("targetPort") == "grpc"),
        f"the Service's grpc port (expected: {grpc}): {service_ports.get('grpc')}",
    )
    policy_ports = [
        port["port"]
        for rule in one(resources, "NetworkPolicy")["spec"]["ingress"]
        for port in rule.get("ports", [])
    ]
    check(("grpc" in policy_ports) == grpc, f"NetworkPolicy ingress ports {policy_ports}")
    # A rule without `from` opens its ports to every pod: the gRPC port's too (a Check carries
    # its own client address, so any pod could spend another's introspection budget).
    # `from: [{}]`, an empty namespace selector (every namespace, whatever the pod selector
    # beside it) and an address block of everything select everyone too.
    def narrow(selector):
        return bool(selector and (selector.get("matchLabels") or selector.get("matchExpressions")))

    def narrow_peer(peer):
        if "ipBlock" in peer:
            return peer["ipBlock"].get("cidr") not in ("0.0.0.0/0", "::/0")
        if "namespaceSelector" in peer:
            return narrow(peer["namespaceSelector"])
        return narrow(peer.get("podSelector"))

    for rule in one(resources, "NetworkPolicy")["spec"]["ingress"]:
        peers = rule.get("from") or []
        check(
            peers and all(narrow_peer(peer) for peer in peers),
            f"a NetworkPolicy ingress rule open to every source: {rule}",
        )

    spec = pod["spec"]
    check(spec.get("enableServiceLinks") is False, "enableServiceLinks must be false")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, "the pod must run as non-root")
    (container,) = spec["containers"]
    # Endpoints are removed while the pod terminates, not before: the ingress keeps sending for
    # a few seconds, so the container waits before it is told to stop accepting, and the
    # drain that follows (up to 20 s, README) still fits in the grace period.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    check(
        0 < pre_stop and pre_stop + 20 <= spec.get("terminationGracePeriodSeconds", 30),
        f"the container must sleep in preStop, leaving 20 s of the grace period: {pre_stop}",
    )
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    expected_ports = {"http": 4180, "admin": 8080} | ({"grpc": GRPC_PORT} if grpc else {})
    check(ports == expected_ports, f"container ports {ports}, expected {expected_ports}")
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    expected_env = {GRPC_OVERRIDE: f"0.0.0.0:{GRPC_PORT}"} if grpc else {}
    check(env == expected_env, f"container environment {env}, expected {expected_env}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") == "admin", f"{probe} must GET {path} on admin")
    security = container.get("securityContext", {})
    check(security.get("readOnlyRootFilesystem") is True, "the root file system must be read-only")
    check(security.get("allowPrivilegeEscalation") is False, "privilege escalation must be off")
    check(security.get("capabilities", {}).get("drop") == ["ALL"], "every capability must be dropped")
    check(
        {"requests", "limits"} <= set(container.get("resources", {})),
        "the container needs resource requests and limits",
    )
    check(
        container.get("args") == ["serve", "--config", f"{CONFIG_MOUNT}/tollgate.toml"],
        f"the container runs {container.get('args')}",
    )
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    config_map = one(resources, "ConfigMap")
    check(
        mounts["config"]["mountPath"] == CONFIG_MOUNT
        and volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"],
        f"the ConfigMap {config_map['metadata']['name']} must be mounted at {CONFIG_MOUNT}",
    )
    check(
        mounts["secrets"]["mountPath"] == SECRET_MOUNT
        and volumes["secrets"]["secret"]["secretName"] == NAME,
        f"the Secret {NAME} must be mounted at {SECRET_MOUNT}",
    )
    # Readable by Tollgate's group only (Tollgate warns about a secret file others may read):
    # the volume's mode leaves others out, and the pod's fsGroup owns the files.
    mode = volumes["secrets"]["secret"].get("defaultMode", 0o644)
    check(mode & 0o007 == 0, f"the Secret's defaultMode {mode:o} lets every user read it")
    check(mode & 0o040 != 0, f"the Secret's defaultMode {mode:o} does not let its group read it")
    pod_security = spec.get("securityContext", {})
    check(
        pod_security.get("fsGroup") is not None
        and pod_security.get("fsGroup") == pod_security.get("runAsGroup"),
        "the pod's fsGroup must be the group Tollgate runs as, which may read the secrets",
    )
    text = config_map["data"]["tollgate.toml"]
    config = tomllib.loads(text)

    def secret_files(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from secret_files(value, f"{path}.{key}" if path else key)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from secret_files(value, f"{path}[{index}]")
        elif path.endswith("_file"):
            yield path, node

    for key, value in secret_files(config, ""):
        check(
            value.startswith(f"{SECRET_MOUNT}/"),
            f"config {key} = {value!r} is not a file of the Secret mounted at {SECRET_MOUNT}",
        )
    check(
        config.get("server", {}).get("listen", "").endswith(":4180")
        and config.get("server", {}).get("admin_listen", "").endswith(":8080"),
        "the config must listen on the container ports 4180 and 8080",
    )
    return text


def example_checks(resources):
    for resource in resources:
        if resource["kind"] == "HTTPRoute":
            refs = [ref for rule in resource["spec"]["rules"] for ref in rule["backendRefs"]]
            check(
                all((ref["name"], ref["port"]) == (NAME, 4180) for ref in refs),
                f"HTTPRoute {resource['metadata']['name']} must send to Service {NAME} port 4180",
            )
        if resource["kind"] == "Ingress" and resource["metadata"]["namespace"] == "auth":
            for rule in resource["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    service = path["backend"]["service"]
                    check(
                        (service["name"], service["port"].get("name")) == (NAME, "http"),
                        f"Ingress path {path['path']} must go to Service {NAME} port http",
                    )


def main():
    rendered, rendered_grpc, config_out, *examples = sys.argv[1:]
    base = load(rendered)
    for resource in base:
        schema_check(rendered, resource)
    config_text = base_checks(base)
    with_grpc = load(rendered_grpc)
    for resource in with_grpc:
        schema_check(rendered_grpc, resource)
    check(
        base_checks(with_grpc, grpc=True) == config_text,
        "the envoy-grpc component must leave the config file as it is",
    )
    for example in examples:
        resources = load(example)
        check(resources, f"{example} holds no object")
        for resource in resources:
            schema_check(example, resource)
        example_checks(resources)
    with open(config_out, "w") as stream:
        stream.write(config_text)
    if problems:
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        sys.exit(1)
    print(
        f"manifests: {len(base)} objects in the base, {len(with_grpc)} with the envoy-grpc "
        f"component and {len(examples)} example files valid"
    )


main()
