#!/usr/bin/env python3
"""Runs the CPU overlay's pod as a kubelet would, without a cluster
(CTest label e2e): renders deploy/kubernetes/overlays/cpu, runs its init
container's command (ditserve-make-model) and then its server container's
command with the manifest's own arguments (volume mount paths mapped into a
temporary directory; ports moved to free loopback ports, the only
arguments added), then

- the startup probe: grpc.health.v1 must answer SERVING within the probe's
  budget (periodSeconds x failureThreshold);
- a request with the server's defaults from the manifest succeeds;
- termination: SIGTERM (after the preStop hook's time is granted) must end
  the server with exit 0 within terminationGracePeriodSeconds - preStop.

So the arguments in the manifest are not only known flags (that is
validate_manifests.py) but values the binaries accept and a pod that
serves. Every process started here is killed at the end.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate_manifests as vm  # noqa: E402
from observability_e2e import BIN, Processes, wait_for  # noqa: E402


def container_argv(c, mounts):
    """command + args with every mount path replaced by its local directory."""
    binary = os.path.join(BIN, c["command"][0])  # a local path: never rewritten (it may lie under /tmp)
    argv = list(c.get("command", [])[1:]) + list(c.get("args", []))
    if not mounts:
        return [binary] + argv
    # One pass, longest mount path first, so that a replaced path (under
    # the local temporary directory, itself under /tmp) is not replaced again.
    paths = sorted(mounts, key=len, reverse=True)
    pattern = re.compile(r"(=|^)(" + "|".join(re.escape(p) for p in paths) + r")(?=/|$)")
    return [binary] + [pattern.sub(lambda m: m.group(1) + mounts[m.group(2)], a, count=1) for a in argv]


class CpuPodTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ditserve_cpu_pod_")
        self.procs = Processes()

    def tearDown(self):
        self.procs.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_cpu_overlay_pod_serves_and_drains(self):
        objs = vm.render("deploy/kubernetes/overlays/cpu")
        deployment = next(o for o in objs if o["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for v in volumes.values():
            self.assertNotIn("persistentVolumeClaim", v, "the CPU overlay needs no storage of the cluster")
        server = next(c for c in spec["containers"] if c["command"][0] == "ditserve-server")
        # One local directory per volume, at every container's mount path.
        local = {name: os.path.join(self.tmp, name) for name in volumes}
        for d in local.values():
            os.makedirs(d)

        def mounts(c):
            return {m["mountPath"]: local[m["name"]] for m in c.get("volumeMounts", [])
                    if m["mountPath"] != "/dev/shm"}

        for init in spec.get("initContainers", []):
            argv = container_argv(init, mounts(init))
            r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            self.assertEqual(r.returncode, 0, f"init container {init['name']}: {argv}\n{r.stdout}{r.stderr}")

        argv = container_argv(server, mounts(server)) + [
            "--host=127.0.0.1", "--port=0", "--metrics_port=0", "--control_listen=127.0.0.1:0", "--print_ports"]
        ports_path = os.path.join(self.tmp, "ports.json")
        with open(ports_path, "w") as ports_out:
            proc = self.procs.start(argv, os.path.join(self.tmp, "server.log"), stdout=ports_out)

        def ports():
            if proc.poll() is not None:
                with open(os.path.join(self.tmp, "server.log")) as f:
                    raise AssertionError(f"ditserve-server exited with {proc.returncode}: {argv}\n{f.read()}")
            with open(ports_path) as f:
                text = f.read().strip()
            return bool(text), json.loads(text) if text else None
        p = wait_for("the server's ports", ports, 120)
        address = f"127.0.0.1:{p['port']}"

        def client(*args):
            return subprocess.run([os.path.join(BIN, "ditserve-client"), "--server", address, *args],
                                  capture_output=True, text=True, timeout=600)

        probe = server["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        start = time.monotonic()
        wait_for(f"SERVING within the startup probe's budget ({budget} s)",
                 lambda: (client("health").returncode == 0, None), budget, probe["periodSeconds"] / 5)
        print(f"startup: SERVING after {time.monotonic() - start:.1f} s (budget {budget} s)")

        out = os.path.join(self.tmp, "image.png")
        r = client("generate", "--prompt", "a red circle on a blue background", "--quiet", "--output", out)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        # The server runs with the manifest's limits and gang.
        flags, _ = vm.parse_args(server["args"])
        info = json.loads(client("info", "--json").stdout)
        self.assertEqual(int(info["limits"]["max_steps"]), int(flags["max_steps"]))
        self.assertEqual(int(info["limits"]["max_pixels"]), int(flags["max_pixels"]))
        self.assertEqual(int(info["limits"]["max_queue_size"]), int(flags["max_queue_size"]))
        self.assertEqual(info["device"], flags["device"])
        self.assertEqual(info["parallel"]["world_size"], vm.gang_size(flags))
        with open(out, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

        # Termination: the preStop hook's time has passed; SIGTERM drains.
        grace = spec["terminationGracePeriodSeconds"] - vm.prestop_sleep(server)
        start = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.fail(f"still running {grace} s after SIGTERM: the kubelet would SIGKILL it")
        self.assertEqual(rc, 0)
        print(f"termination: exit 0 after {time.monotonic() - start:.1f} s (grace {grace:g} s)")


if __name__ == "__main__":
    unittest.main(verbosity=2)
