#!/usr/bin/env python3
"""Checks deploy/prometheus, deploy/grafana and the prometheus-adapter rule
offline (a unittest suite; exit 0 when every check passes):

- promtool check config (prometheus.yml and its rule files), promtool check
  rules, promtool test rules (tests/deploy/prometheus/*_test.yml);
- the Kubernetes scrape job (scrape-kubernetes.yml): Debian's promtool has no
  Kubernetes discovery, so its discovery is swapped for a static target and
  the rest (relabelling included) is checked by promtool; its relabelling is
  then applied to the pods of the rendered manifests: frontends are kept with
  namespace and pod labels (which prometheus-adapter's rule needs), workers
  dropped;
- every PromQL expression of the rules, the dashboard and the adapter rule
  parses (promql-parser; the adapter's and the dashboard's through promtool
  too), every recorded name they use is recorded by a rule;
- the dashboard: its data source is the variable ${datasource} everywhere.

Which metrics the server really exports is checked against a running server
by tests/deploy/observability_e2e.py.
"""

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import observability_files as of  # noqa: E402
import validate_manifests as vm  # noqa: E402

ROOT = of.ROOT


def promtool():
    path = os.environ.get("DITSERVE_PROMTOOL") or shutil.which("promtool")
    if not path:
        raise SystemExit("check_prometheus: promtool not found (scripts/setup installs Debian's prometheus)")
    return path


def run_promtool(*args, cwd=ROOT):
    r = subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=300)
    return r.returncode, r.stdout + r.stderr


def relabel(rules, labels):
    """Prometheus' relabelling (keep, drop, replace, labelmap) of one
    target's labels; None when the target is dropped."""
    labels = dict(labels)
    for r in rules:
        action = r.get("action", "replace")
        regex = re.compile(r.get("regex", "(.*)"))
        value = r.get("separator", ";").join(labels.get(s, "") for s in r.get("source_labels", []))
        m = regex.fullmatch(value)
        if action == "keep":
            if not m:
                return None
        elif action == "drop":
            if m:
                return None
        elif action == "replace":
            if m:
                repl = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "",
                              r.get("replacement", "$1"))
                if repl:
                    labels[r["target_label"]] = repl
                else:
                    labels.pop(r["target_label"], None)
        elif action == "labelmap":
            for k, v in list(labels.items()):
                mm = regex.fullmatch(k)
                if mm:
                    labels[re.sub(r"\$(\d+)", lambda g: mm.group(int(g.group(1))), r.get("replacement", "$1"))] = v
        else:
            raise ValueError(f"relabel action {action} not simulated")
    return labels


def pod_targets(objs, namespace="ml"):
    """Kubernetes pod-discovery targets (one per container port) of the
    rendered pod templates, as __meta_kubernetes_* labels."""
    out = []
    for where, role, tpl in vm.pod_templates(objs):
        for c in tpl["spec"]["containers"]:
            for p in c.get("ports", []) or [{}]:
                t = {"__meta_kubernetes_namespace": namespace,
                     "__meta_kubernetes_pod_name": f"{role}-0",
                     "__meta_kubernetes_pod_container_name": c["name"],
                     "__meta_kubernetes_pod_container_port_name": p.get("name", "")}
                for k, v in tpl["metadata"].get("labels", {}).items():
                    t["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)] = v
                out.append((f"{where}/{c['name']}:{p.get('name')}", t))
    return out


def dashboard_problems(dash):
    problems = []
    ds_vars = [v for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"]
    if not ds_vars or ds_vars[0].get("query") != "prometheus":
        problems.append("no Prometheus data source variable")
    else:
        uid = "${%s}" % ds_vars[0]["name"]
        for p in of.dashboard_panels(dash):
            if p.get("type") == "row":
                continue
            for obj, what in [(p, "panel")] + [(t, "target " + t.get("refId", "?")) for t in p.get("targets", [])]:
                if obj.get("datasource", {}).get("uid") != uid:
                    problems.append(f"panel {p.get('title')!r} {what}: data source "
                                    f"{obj.get('datasource')} is not {uid}")
            if not p.get("targets"):
                problems.append(f"panel {p.get('title')!r}: no query")
        for v in dash["templating"]["list"]:
            if v.get("type") == "query" and v.get("datasource", {}).get("uid") != uid:
                problems.append(f"variable {v['name']}: data source is not {uid}")
    try:
        exprs = of.dashboard_expressions(dash)
    except ValueError as e:
        return problems + [str(e)]
    for where, e in exprs:
        try:
            of.metric_names(e)
        except ValueError as err:
            problems.append(f"{where}: {err}")
    return problems


class PrometheusFilesTest(unittest.TestCase):
    def test_promtool_check_config(self):
        rc, out = run_promtool("check", "config", "deploy/prometheus/prometheus.yml")
        self.assertEqual(rc, 0, out)
        self.assertIn("2 rule files found", out)

    def test_promtool_check_rules(self):
        rc, out = run_promtool("check", "rules", *of.RULE_FILES)
        self.assertEqual(rc, 0, out)

    def test_promtool_test_rules(self):
        tests = sorted(os.path.relpath(p, ROOT) for p in
                       __import__("glob").glob(os.path.join(ROOT, "tests/deploy/prometheus/*_test.yml")))
        self.assertTrue(tests)
        rc, out = run_promtool("test", "rules", *tests)
        print(out)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("FAILED", out)

    def test_promtool_catches_a_broken_rule(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": [{"name": "x", "rules": [
                    {"record": "ditserve:x", "expr": "sum by (le (rate(ditserve_queue_depth[5m]))"}]}]}, f)
            rc, out = run_promtool("check", "rules", path)
            self.assertNotEqual(rc, 0, out)

    def test_kubernetes_scrape_job(self):
        with open(os.path.join(ROOT, "deploy/prometheus/scrape-kubernetes.yml")) as f:
            doc = yaml.safe_load(f)
        job = doc["scrape_configs"][0]
        self.assertIn("kubernetes_sd_configs", job)
        self.assertEqual(job["kubernetes_sd_configs"][0]["role"], "pod")
        static = copy.deepcopy(job)
        del static["kubernetes_sd_configs"]
        static["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "prometheus.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"scrape_configs": [static]}, f)
            rc, out = run_promtool("check", "config", path)
            self.assertEqual(rc, 0, out)
        # Its relabelling on the pods the manifests make.
        for path in ("deploy/kubernetes/base", "deploy/kubernetes/overlays/multi-node"):
            kept = {}
            for where, target in pod_targets(vm.render(path)):
                out = relabel(job["relabel_configs"], target)
                if out is not None:
                    kept[where] = out
            self.assertEqual(len(kept), 1, f"{path}: kept {sorted(kept)}")
            where, labels = next(iter(kept.items()))
            self.assertTrue(where.endswith(":metrics"), where)
            self.assertEqual(labels.get("namespace"), "ml")
            self.assertIn("pod", labels)
            # prometheus-adapter maps these labels to resources.
            with open(of.ADAPTER_CONFIG) as f:
                adapter = yaml.safe_load(f)
            for rule in adapter["rules"]:
                for label in rule["resources"]["overrides"]:
                    self.assertIn(label, labels, f"adapter needs label {label}")

    def test_expressions_parse(self):
        exprs = of.all_expressions()
        self.assertGreater(len(exprs), 40)
        for where, e in exprs:
            with self.subTest(where=where):
                of.metric_names(e)

    def test_adapter_and_dashboard_queries_pass_promtool(self):
        exprs = of.adapter_expressions() + of.dashboard_expressions(of.load_dashboard())
        rules = [{"record": f"check:q{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "queries.yml")
            with open(path, "w") as f:
                yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, f)
            rc, out = run_promtool("check", "rules", path)
            self.assertEqual(rc, 0, out)
            self.assertIn(f"{len(rules)} rules found", out)

    def test_recorded_names_are_recorded(self):
        recorded = of.recorded_names()
        for name, where in of.referenced_names().items():
            if ":" in name:
                self.assertIn(name, recorded, f"{name} used by {where} is recorded by no rule")

    def test_dashboard(self):
        dash = of.load_dashboard()
        self.assertEqual(dashboard_problems(dash), [])
        exprs = " ".join(e for _, e in of.dashboard_expressions(dash))
        # What the issue asks the dashboard to show.
        for needed in ("ditserve_images_generated_total", "ditserve_pixels_generated_total",
                       "ditserve_queue_depth", "ditserve_requests_total", "ditserve_gang_restarts_total",
                       "ditserve_communication_seconds_total", "ditserve_step_seconds_bucket",
                       "ditserve_vae_seconds_bucket", "ditserve_encoding_seconds_bucket",
                       "ditserve_denoising_seconds_bucket", "ditserve_queue_time_seconds_bucket"):
            self.assertIn(needed, exprs)

    def test_dashboard_problems_are_caught(self):
        dash = of.load_dashboard()
        bad = copy.deepcopy(dash)
        panel = next(p for p in bad["panels"] if p.get("targets"))
        panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
        self.assertTrue(any("is not ${datasource}" in p for p in dashboard_problems(bad)))
        bad = copy.deepcopy(dash)
        panel = next(p for p in bad["panels"] if p.get("targets"))
        panel["targets"][0]["expr"] = "sum(rate(ditserve_queue_depth[$__rate_interval])"
        self.assertTrue(dashboard_problems(bad))


if __name__ == "__main__":
    unittest.main(verbosity=2)
