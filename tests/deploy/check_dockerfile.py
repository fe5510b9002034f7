#!/usr/bin/env python3
"""Checks deploy/docker/Dockerfile against a development build (the image
itself cannot be built here):

- the binaries it copies are the ones scripts/build makes (build/bin), and
  the SentencePiece shim sits in lib/ beside bin/ where the worker looks;
- its runtime packages are exactly the Debian packages of the shared
  libraries those binaries link (ldd, then dpkg -S), nothing missing and
  nothing unexplained;
- every library resolved from LibTorch's wheel or the CUDA toolkit is found
  in the image's LD_LIBRARY_PATH, mapped back to the venv's site-packages;
- the Python version of its venv path and the stages' commands match
  scripts/setup and scripts/build.
"""

import glob
import os
import re
import subprocess
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("DITSERVE_BIN_DIR", os.path.join(ROOT, "build/bin"))
DOCKERFILE = os.path.join(ROOT, "deploy/docker/Dockerfile")
# In debian:12-slim already (priority required), or needed without a link.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
ALLOWED_EXTRAS = {"ca-certificates", "zlib1g"}


def dockerfile_text():
    with open(DOCKERFILE) as f:
        return re.sub(r"\\\n", " ", f.read())  # join continued lines


def stage(text, name):
    m = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    if not m:
        raise AssertionError(f"no stage {name}")
    return m.group(1)


def venv_site():
    """The setup venv's site-packages (the LibTorch the build used)."""
    with open(os.path.join(ROOT, "build/CMakeCache.txt")) as f:
        m = re.search(r"^DITSERVE_TORCH_DIR:\w+=(.*)$", f.read(), re.M)
    if m:
        return os.path.dirname(m.group(1).strip())
    return glob.glob(os.path.expanduser("~/.cache/ditserve/venv/lib/python3*/site-packages"))[0]


def ldd(path):
    r = subprocess.run(["ldd", path], capture_output=True, text=True, check=True)
    libs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            libs[m.group(1)] = m.group(2)
    return libs


def packages_of(paths):
    """{path: Debian package or None}, with one dpkg -S for all."""
    out = {}
    candidates = {p: [os.path.realpath(p), p] for p in paths}
    queries = sorted({c for cs in candidates.values() for c in cs})
    r = subprocess.run(["dpkg", "-S", *queries], capture_output=True, text=True)
    owner = {}
    for line in r.stdout.splitlines():
        pkg, _, path = line.partition(": ")
        for one in path.split(", "):
            owner[one.strip()] = pkg.split(":")[0].split(",")[0]
    for p, cs in candidates.items():
        out[p] = next((owner[c] for c in cs if c in owner), None)
    return out


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = dockerfile_text()
        cls.build = stage(cls.text, "build")
        cls.runtime = stage(cls.text, "runtime")
        m = re.search(r"cp ((?:build/bin/\S+\s+)+)/out/bin/", cls.build)
        assert m, "no `cp build/bin/... /out/bin/` in the build stage"
        cls.binaries = [os.path.basename(p) for p in m.group(1).split()]
        cls.shim = re.search(r"cp build/lib/(\S+) /out/lib/", cls.build)
        for b in cls.binaries:
            assert os.access(os.path.join(BIN, b), os.X_OK), f"{b} is not built (scripts/build)"
        cls.files = [os.path.join(BIN, b) for b in cls.binaries]
        if cls.shim:
            cls.files.append(os.path.join(os.path.dirname(BIN), "lib", cls.shim.group(1)))
        cls.links = {f: ldd(f) for f in cls.files}

    def test_copies_every_server_binary(self):
        for needed in ("ditserve-server", "ditserve-worker", "ditserve-run", "ditserve-client",
                       "ditserve-make-model"):
            self.assertIn(needed, self.binaries)
        self.assertIsNotNone(self.shim, "the worker dlopens lib/libditserve_spm_shim.so beside bin/")
        self.assertEqual(self.shim.group(1), "libditserve_spm_shim.so")
        self.assertIn("COPY --from=build /out/ /opt/ditserve/", self.runtime)
        self.assertIn("PATH=/opt/ditserve/bin:", self.runtime)

    def test_runtime_packages_are_exactly_the_linked_ones(self):
        site = venv_site()
        m = re.search(r"apt-get install -y --no-install-recommends\s+(.*?)\s+&&", self.runtime)
        self.assertTrue(m, "no apt-get install in the runtime stage")
        listed = set(m.group(1).split())
        needed, unowned = set(), []
        system = {path for links in self.links.values() for path in links.values()
                  if not (path.startswith(site) or path.startswith("/usr/local/cuda"))}
        owners = packages_of(system)
        for f in self.files:
            for soname, path in self.links[f].items():
                if path not in system:
                    continue
                pkg = owners[path]
                if pkg is None:
                    unowned.append(f"{os.path.basename(f)}: {soname} => {path}")
                else:
                    needed.add(pkg)
        self.assertEqual(unowned, [], "libraries no Debian package owns")
        self.assertEqual(sorted(needed - BASE_PACKAGES - listed), [], "linked but not installed")
        self.assertEqual(sorted(listed - needed - ALLOWED_EXTRAS), [], "installed but linked by nothing")

    def test_wheel_and_cuda_libraries_are_on_the_library_path(self):
        site = venv_site()
        m = re.search(r"LD_LIBRARY_PATH=(\S+)", self.runtime)
        self.assertTrue(m)
        dirs = []
        for d in m.group(1).split(":"):
            self.assertTrue(d.startswith("/opt/ditserve/"), d)
            local = os.path.join(site, d[len("/opt/ditserve/"):])
            self.assertTrue(os.path.isdir(local), f"{d}: {local} does not exist in the venv")
            dirs.append(local)
        # The image copies exactly torch/lib and nvidia/ from site-packages.
        self.assertRegex(self.runtime, r"COPY --from=build \$\{SITE\}/torch/lib /opt/ditserve/torch/lib")
        self.assertRegex(self.runtime, r"COPY --from=build \$\{SITE\}/nvidia /opt/ditserve/nvidia")
        self.assertIn(f"ARG SITE=/opt/ditserve-cache/venv/lib/{os.path.basename(os.path.dirname(site))}"
                      "/site-packages", self.runtime)
        missing = []
        for f in self.files:
            for soname, path in self.links[f].items():
                if path.startswith(site) or path.startswith("/usr/local/cuda"):
                    if not any(os.path.exists(os.path.join(d, soname)) for d in dirs):
                        missing.append(f"{os.path.basename(f)}: {soname} ({path})")
        self.assertEqual(missing, [], "not on the image's LD_LIBRARY_PATH")

    def test_build_stage_is_setup_and_build(self):
        self.assertRegex(self.text, r"FROM debian:12 AS build")
        self.assertRegex(self.text, r"FROM debian:12-slim AS runtime")
        self.assertIn("RUN scripts/setup", self.build)
        self.assertRegex(self.build, r"scripts/build -DDITSERVE_TESTS=OFF -DDITSERVE_CUDA=ON")
        self.assertIn("DITSERVE_CACHE=/opt/ditserve-cache", self.build)
        with open(os.path.join(ROOT, "scripts/setup")) as f:
            self.assertIn("DITSERVE_CACHE", f.read())
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        for needed in ("scripts", "CMakeLists.txt", "cmake", "proto", "server", "worker", "parallel",
                       "kernels", "util", "client", "bench", "tests"):
            self.assertNotIn(needed, ignored, f"the build needs {needed}")
        self.assertIn("build", ignored)


if __name__ == "__main__":
    unittest.main(verbosity=2)
