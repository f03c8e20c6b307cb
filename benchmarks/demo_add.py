"""Benchmark and proof: an adapter added to a demo build in place is the one a whole build makes, byte for byte.

    python -m benchmarks.demo_add            # needs a Docker engine and the CPU serving image (a local deploy builds it)

In the serving image, as the deploy runs the builder (files/models/build_demo_model.py), one after the other:
1. a whole build of `weather` into A;
2. `weather,sql` into A: the builder finds `weather` and adds `sql` on A's base;
3. `sql` into A: nothing to do;
4. a whole build of `weather,sql` into B.
Prints each step's time and compares A's and B's weights with `cmp`; exits 1 if any differ.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorafleet.deploy import stack
from lorafleet.deploy.settings import Secrets, build_settings
from tests.conftest import group_data
from tests.support.scenario import ROOT, cpu_base_image

WEIGHTS = ("base/model.safetensors", "adapters/weather/adapter_model.safetensors",
           "adapters/sql/adapter_model.safetensors")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", help="the serving image (default: the local target's CPU image)")
    a = ap.parse_args()
    image = a.image or stack.serving_image(build_settings({**group_data("local"), "cpu_base_image": cpu_base_image()},
                                                          Secrets(hf_token="", api_key="unused")))
    work = Path(tempfile.mkdtemp(prefix="lorafleet-demo-add-"))
    try:
        def build(folder: str, adapters: str) -> float:
            started = time.monotonic()
            subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{ROOT}:/src:ro", "-v", f"{work}:/out",
                            "--entrypoint", "python3", image, "/src/files/models/build_demo_model.py",
                            "--out", f"/out/{folder}", "--adapters", adapters], check=True, stdout=subprocess.DEVNULL)
            return time.monotonic() - started

        steps = [("whole build of weather", build("a", "weather")), ("sql added to it", build("a", "weather,sql")),
                 ("sql asked again (up to date)", build("a", "sql")), ("whole build of weather,sql", build("b", "weather,sql"))]
        for name, seconds in steps:
            print(f"{name:<32} {seconds:6.1f} s")
        differ = [w for w in WEIGHTS if subprocess.run(["cmp", "-s", work / "a" / w, work / "b" / w]).returncode != 0]
        for w in WEIGHTS:
            print(f"{w:<48} {'DIFFERS' if w in differ else 'identical'}")
        return 1 if differ else 0
    finally:
        # What the builder wrote is root's (it runs as root in its container): removed from a container too.
        subprocess.run(["docker", "run", "--rm", "-v", f"{work}:/out", "--entrypoint", "rm", image, "-rf",
                        "/out/a", "/out/b"], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
