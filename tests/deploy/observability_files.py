"""The PromQL of deploy/: the rules, the Grafana dashboard and the
prometheus-adapter rule, and the metric names each expression reads
(parsed with PyPI's promql-parser, not with regular expressions)."""

import glob
import json
import os
import re

import promql_parser
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RULE_FILES = sorted(glob.glob(os.path.join(ROOT, "deploy/prometheus/rules/*.yml")))
DASHBOARD = os.path.join(ROOT, "deploy/grafana/ditserve-dashboard.json")
ADAPTER_CONFIG = os.path.join(ROOT, "deploy/kubernetes/prometheus-adapter/config.yaml")

# Grafana's variables, replaced by values PromQL accepts before parsing.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "$namespace": ".*", "$model": ".*", "$parallel": ".*"}
# prometheus-adapter's template fields.
ADAPTER_VARS = {"<<.Series>>": "ditserve_queue_depth", "<<.LabelMatchers>>": 'namespace="ns",pod=~"a|b"',
                "<<.GroupBy>>": "pod"}
# Series Prometheus makes itself rather than the server.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def substitute(expr, variables):
    for k in sorted(variables, key=len, reverse=True):
        expr = expr.replace(k, variables[k])
    if "$" in expr or "<<" in expr:
        raise ValueError(f"unknown variable left in {expr!r}")
    return expr


def metric_names(expr):
    """The metric names an expression selects (a selector without a name
    but with __name__="x" counts as x)."""
    names = []

    def visit(node, *_):
        if type(node).__name__ == "VectorSelector":
            if node.name:
                names.append(node.name)
            else:
                for m in node.matchers.matchers:
                    if m.name == "__name__":
                        names.append(m.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def rule_expressions():
    """[(where, expr, record-or-None)] of every rule."""
    out = []
    for path in RULE_FILES:
        with open(path) as f:
            doc = yaml.safe_load(f)
        for g in doc["groups"]:
            for r in g["rules"]:
                where = f"{os.path.relpath(path, ROOT)}: {r.get('record') or r.get('alert')}"
                out.append((where, r["expr"], r.get("record")))
    return out


def load_dashboard(path=DASHBOARD):
    with open(path) as f:
        return json.load(f)


def dashboard_panels(dash):
    for p in dash["panels"]:
        yield p
        for inner in p.get("panels", []):
            yield inner


def dashboard_expressions(dash):
    """[(where, expr)] of every panel target and query variable."""
    out = []
    for p in dashboard_panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t.get('refId')}", substitute(t["expr"], GRAFANA_VARS)))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]+\)", q.strip())
            if not m:
                raise ValueError(f"variable {v['name']}: unsupported query {q!r}")
            out.append((f"variable {v['name']}", substitute(m.group(1), GRAFANA_VARS)))
    return out


def adapter_expressions():
    with open(ADAPTER_CONFIG) as f:
        doc = yaml.safe_load(f)
    out = []
    for i, r in enumerate(doc["rules"]):
        out.append((f"adapter rule {i} seriesQuery", r["seriesQuery"]))
        out.append((f"adapter rule {i} metricsQuery", substitute(r["metricsQuery"], ADAPTER_VARS)))
    return out


def all_expressions():
    return ([(w, e) for w, e, _ in rule_expressions()] + dashboard_expressions(load_dashboard())
            + adapter_expressions())


def referenced_names():
    """{metric name: [where...]} over every expression of deploy/."""
    names = {}
    for where, expr in all_expressions():
        for n in metric_names(expr):
            names.setdefault(n, []).append(where)
    return names


def recorded_names():
    return {rec for _, _, rec in rule_expressions() if rec}


def server_names_needed():
    """The raw series names deploy/ needs the server to export:
    everything referenced that is neither recorded nor Prometheus' own."""
    rec = recorded_names()
    return {n: w for n, w in referenced_names().items() if n not in rec and n not in PROMETHEUS_SERIES}


def label_equalities():
    """{(metric, label, value)} of every `label="value"` matcher on a named
    selector in deploy/ (values the server's series must really carry)."""
    out = {}
    for where, expr in all_expressions():
        def visit(node, *_):
            if type(node).__name__ == "VectorSelector" and node.name:
                for m in node.matchers.matchers:
                    if m.op == promql_parser.MatchOp.Equal and m.name != "__name__":
                        out.setdefault((node.name, m.name, m.value), []).append(where)
            return True
        promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return out
