#!/usr/bin/env python3
"""End-to-end observability test (CTest label e2e).

Starts ditserve-server on a tiny CPU gang (a model made by
ditserve-make-model; two ranks once the worker serves gangs, else one) and a real Prometheus (Debian's package) on loopback
that scrapes it every second and evaluates deploy/prometheus/rules, then:

1. every metric and label value that deploy/ (rules, dashboard,
   prometheus-adapter rule) reads is one the server's /metrics really
   exports, with the type its name implies;
2. requests sent with ditserve-client are counted by Prometheus exactly
   (requests by code, images, pixels), and the request-latency quantiles
   Prometheus computes from the histogram (directly and through the
   recording rule) fall in the bucket that the latencies the client saw
   put them in; the latency sum lies between the server-reported totals
   and the client's wall-clock times.

Ports are picked free; every process started here is killed at the end,
also on failure. Deadlines are generous (a loaded 2-core machine); there
are no timing assertions.
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import observability_files as of  # noqa: E402

ROOT = of.ROOT
BIN = os.environ.get("DITSERVE_BIN_DIR", os.path.join(ROOT, "build/bin"))
PROMETHEUS = os.environ.get("DITSERVE_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
REQUESTS = 4
STEPS = 2
# Target labels Prometheus adds (not the server's).
TARGET_LABELS = {"namespace", "pod", "job", "instance"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, predicate, timeout_s, interval_s=0.5):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = predicate()
            if ok:
                return last
        except (OSError, ValueError, KeyError) as e:
            last = repr(e)
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; last: {last}")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class Processes:
    """Children started in their own process groups; all killed by stop()."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        log = open(log_path, "w")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log, start_new_session=True, **kw)
        self.procs.append((p, log))
        return p

    def stop(self):
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for p, log in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the gang's ranks too
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
            log.close()
        self.procs = []


class ObservabilityE2E(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ditserve_observability_")
        cls.procs = Processes()
        try:
            cls._start()
        except BaseException:
            cls._dump_logs()
            cls.procs.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.procs.stop()
        if os.environ.get("DITSERVE_KEEP_TMP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _dump_logs(cls):
        for name in sorted(os.listdir(cls.tmp)):
            if name.endswith(".log"):
                with open(os.path.join(cls.tmp, name), errors="replace") as f:
                    text = f.read()
                print(f"---- {name} (last 3000 chars)\n{text[-3000:]}", file=sys.stderr)

    @classmethod
    def _start(cls):
        model = os.path.join(cls.tmp, "flux-tiny")
        r = subprocess.run([os.path.join(BIN, "ditserve-make-model"), "--preset=tiny", f"--out={model}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        # A gang of two ranks (Gloo) once the worker can serve one
        # (ParallelFluxPipeline in the tree); a gang of one until then.
        parallel = os.path.exists(os.path.join(ROOT, "worker/pipelines/parallel_flux_pipeline.cc"))
        cls.ulysses = 2 if parallel else 1
        ports_path = os.path.join(cls.tmp, "ports.json")
        with open(ports_path, "w") as ports_out:
            cls.server = cls.procs.start(
                [os.path.join(BIN, "ditserve-server"), f"--model={model}", "--spawn_workers", "--device=cpu",
                 "--threads=1", f"--ulysses_degree={cls.ulysses}", "--port=0", "--metrics_port=0", "--control_listen=127.0.0.1:0",
                 "--host=127.0.0.1", "--print_ports"],
                os.path.join(cls.tmp, "server.log"), stdout=ports_out)

        def ports():
            if cls.server.poll() is not None:
                raise AssertionError(f"ditserve-server exited with {cls.server.returncode}")
            with open(ports_path) as f:
                text = f.read().strip()
            return (bool(text), json.loads(text.splitlines()[0]) if text else None)
        p = wait_for("ditserve-server's ports", ports, 120)
        cls.address = f"127.0.0.1:{p['port']}"
        cls.metrics_port = p["metrics_port"]
        r = cls.client(["--wait_ready_s", "600", "health"])
        assert r.returncode == 0, r.stdout + r.stderr

        # Prometheus: scrapes every second, evaluates the project's rules.
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": of.RULE_FILES,
            "scrape_configs": [{"job_name": "ditserve", "static_configs": [
                {"targets": [f"127.0.0.1:{cls.metrics_port}"], "labels": {"namespace": "e2e"}}]}],
        }
        config_path = os.path.join(cls.tmp, "prometheus.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        for attempt in range(3):
            cls.prom_port = free_port()
            prom = cls.procs.start(
                [PROMETHEUS, f"--config.file={config_path}",
                 f"--storage.tsdb.path={os.path.join(cls.tmp, f'tsdb{attempt}')}",
                 f"--web.listen-address=127.0.0.1:{cls.prom_port}", "--log.level=warn"],
                os.path.join(cls.tmp, f"prometheus{attempt}.log"))

            def ready():
                if prom.poll() is not None:
                    raise AssertionError("exited")
                return ("Ready" in http_get(f"http://127.0.0.1:{cls.prom_port}/-/ready"), None)
            try:
                wait_for("Prometheus ready", ready, 120)
                break
            except AssertionError:
                if prom.poll() is None or attempt == 2:
                    raise  # not a port clash
        # The first scrape (every counter at 0) before any request.
        wait_for("the first scrape", lambda: (cls.query_value('up{job="ditserve"}') == 1, None), 120)
        wait_for("the first scrape with the gang ready",
                 lambda: (cls.query_value('ditserve_gang_ready{job="ditserve"}') == 1, None), 120)

    @classmethod
    def client(cls, args, timeout=600):
        return subprocess.run([os.path.join(BIN, "ditserve-client"), "--server", cls.address, *args],
                              capture_output=True, text=True, timeout=timeout)

    @classmethod
    def query(cls, promql):
        url = f"http://127.0.0.1:{cls.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        doc = json.loads(http_get(url))
        if doc.get("status") != "success":
            raise ValueError(f"{promql}: {doc}")
        return doc["data"]["result"]

    @classmethod
    def query_value(cls, promql):
        """The single sample's value; None when the result is empty."""
        result = cls.query(promql)
        if not result:
            return None
        if len(result) != 1:
            raise ValueError(f"{promql}: {len(result)} series: {result}")
        return float(result[0]["value"][1])

    def scrape(self):
        return list(text_string_to_metric_families(http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")))

    # ------------------------------------------------------------------ 1

    def test_1_every_metric_deploy_reads_is_exported(self):
        families = self.scrape()
        samples = {}
        for fam in families:
            for s in fam.samples:
                samples.setdefault(s.name, []).append((fam.type, s.labels))
        needed = of.server_names_needed()
        self.assertGreaterEqual(len(needed), 15, sorted(needed))
        missing = {n: w for n, w in needed.items() if n not in samples}
        self.assertEqual(missing, {}, "referenced in deploy/ but not exported by ditserve-server")
        for name in needed:
            kind = samples[name][0][0]
            if re.search(r"_(bucket|sum|count)$", name) and kind != "counter":
                self.assertEqual(kind, "histogram", name)
            elif name.endswith("_total"):
                self.assertEqual(kind, "counter", name)
            else:
                self.assertEqual(kind, "gauge", name)
        for (name, label, value), where in of.label_equalities().items():
            if label in TARGET_LABELS or name in of.PROMETHEUS_SERIES or name in of.recorded_names():
                continue
            values = {labels.get(label) for _, labels in samples.get(name, [])}
            self.assertIn(value, values, f"{name}{{{label}={value!r}}} used by {where}: the server "
                                         f"exports {label} values {sorted(v for v in values if v)}")

    # ------------------------------------------------------------------ 2

    def bucket_bounds(self):
        for fam in self.scrape():
            if fam.name == "ditserve_request_latency_seconds":
                return sorted(float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket"))
        raise AssertionError("no ditserve_request_latency_seconds histogram")

    @staticmethod
    def expected_bucket(values, q, bounds):
        """(lower, upper] of the bucket where Prometheus' histogram_quantile
        interpolates the q-quantile of `values`."""
        rank = q * len(values)
        lower = 0.0
        for b in bounds:
            if sum(1 for v in values if v <= b) >= rank:
                return lower, b
            lower = b
        return lower, math.inf

    def test_2_prometheus_agrees_with_the_client(self):
        totals, walls, pixels = [], [], 0
        for i in range(REQUESTS):
            out = os.path.join(self.tmp, f"image{i}.png")
            start = time.monotonic()
            r = self.client(["generate", "--prompt", f"a red circle {i}", "--num_inference_steps", str(STEPS),
                             "--seed", str(i), "--quiet", "--output", out])
            walls.append(time.monotonic() - start)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            m = re.search(r"total ([0-9.]+) s", r.stdout)
            w = re.search(r"\((\d+)x(\d+) png", r.stdout)
            self.assertTrue(m and w, r.stdout)
            totals.append(float(m.group(1)))
            pixels += int(w.group(1)) * int(w.group(2))
        print(f"gang of {self.ulysses}; client: totals {totals}, wall {[round(x, 3) for x in walls]}, pixels {pixels}")

        ok = wait_for("Prometheus to count the requests",
                      lambda: ((v := self.query_value('sum(ditserve_requests_total{job="ditserve",code="OK"})'))
                               is not None and v >= REQUESTS, v), 120)
        self.assertEqual(ok, REQUESTS)
        self.assertEqual(self.query_value('sum(ditserve_requests_total{job="ditserve",code!="OK"})'), 0)
        self.assertEqual(self.query_value('sum(ditserve_request_latency_seconds_count{job="ditserve"})'), REQUESTS)
        self.assertEqual(self.query_value('sum(ditserve_images_generated_total{job="ditserve"})'), REQUESTS)
        self.assertEqual(self.query_value('sum(ditserve_pixels_generated_total{job="ditserve"})'), pixels)
        latency_sum = self.query_value('sum(ditserve_request_latency_seconds_sum{job="ditserve"})')
        # The server's latency ends just after the response's total_s is
        # taken and before the client has the response.
        self.assertGreaterEqual(latency_sum, sum(totals) - 0.001 * REQUESTS)
        self.assertLessEqual(latency_sum, sum(walls))

        bounds = self.bucket_bounds()
        for q in (0.5, 0.9):
            lo, _ = self.expected_bucket(totals, q, bounds)
            _, hi = self.expected_bucket(walls, q, bounds)
            direct = self.query_value(
                f'histogram_quantile({q}, sum by (le) (ditserve_request_latency_seconds_bucket{{job="ditserve"}}))')
            print(f"p{int(q * 100)}: Prometheus {direct:.4f} s, client's bucket ({lo}, {hi}]")
            self.assertTrue(lo <= direct <= hi, f"p{q}: Prometheus says {direct}, the client's latencies "
                                                f"{totals} put it in ({lo}, {hi}]")
            # The same through the project's recording rule (rate over 5m).
            recorded = wait_for(
                "the recording rule",
                lambda: ((v := self.query_value(
                    f'ditserve:stage_latency_seconds:quantile_rate5m{{stage="request",quantile="{q}"}}'))
                    is not None and not math.isnan(v) and lo <= v <= hi, v), 60)
            print(f"p{int(q * 100)}: recording rule {recorded:.4f} s")

        # A refused request: counted under its code, with the others.
        r = self.client(["generate", "--prompt", "x", "--height", "100", "--quiet",
                         "--output", os.path.join(self.tmp, "bad.png")])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("INVALID_ARGUMENT", r.stderr)
        bad = wait_for("Prometheus to count the refusal",
                       lambda: ((v := self.query_value(
                           'sum(ditserve_requests_total{job="ditserve",code="INVALID_ARGUMENT"})')) == 1, v), 60)
        self.assertEqual(bad, 1)
        self.assertEqual(self.query_value('sum(ditserve_requests_total{job="ditserve"})'), REQUESTS + 1)
        self.assertEqual(self.query_value('sum(ditserve_request_latency_seconds_count{job="ditserve"})'),
                         REQUESTS + 1)


if __name__ == "__main__":
    for tool in (PROMETHEUS, os.path.join(BIN, "ditserve-server")):
        if not os.access(tool, os.X_OK):
            sys.exit(f"observability_e2e: {tool} is missing (scripts/setup, scripts/build)")
    unittest.main(verbosity=2)
