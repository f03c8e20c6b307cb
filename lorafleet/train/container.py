"""``lorafleet train`` inside a throwaway container of the serving image: torch, transformers and peft
come with the image, nothing is installed. The GPU box uses it (docs/training.md), and so do the e2e
test and the benchmarks on the CPU image.

This checkout's ``lorafleet`` package is mounted read-only; the data, the base and the output
folder are mounted at their own paths (path parity), so every path on the command line means the
same inside and out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the lorafleet package of this checkout
SOURCE_MOUNT = "/opt/lorafleet-src"


def docker_command(image: str, data: str | Path, base: str | Path, out: str | Path, train_args: Sequence[str] = (),
                   *, gpus: bool = False, network: bool = False, cidfile: str | Path | None = None,
                   extra_mounts: Sequence[str | Path] = (), package_dir: Path = PACKAGE_DIR) -> list[str]:
    """``docker run --rm ... python3 -m lorafleet.train DATA --base BASE --out OUT TRAIN_ARGS``.

    ``base`` is a folder (mounted read-only) or a hub id (then ``network`` must be on, and HF_TOKEN
    is passed through from the caller's environment). ``extra_mounts`` are more read-only folders
    (e.g. the held-out file's folder for ``--eval``).
    """
    data, out = Path(data).resolve(), Path(out).resolve()
    ro = {data.parent, *(Path(m).resolve() for m in extra_mounts)}
    base_is_folder = Path(base).exists()
    if base_is_folder:
        base = Path(base).resolve()
        ro.add(base)
    cmd = ["docker", "run", "--rm"]
    if not network:
        cmd += ["--network", "none", "-e", "HF_HUB_OFFLINE=1"]
    else:
        cmd += ["-e", "HF_TOKEN"]
    if gpus:
        cmd += ["--gpus", "all"]
    if cidfile:
        cmd += ["--cidfile", str(cidfile)]
    cmd += ["-v", f"{package_dir}:{SOURCE_MOUNT}/lorafleet:ro", "-e", f"PYTHONPATH={SOURCE_MOUNT}"]
    for folder in sorted(ro - {out.parent}):
        cmd += ["-v", f"{folder}:{folder}:ro"]
    cmd += ["-v", f"{out.parent}:{out.parent}"]
    cmd += ["--entrypoint", "python3", image, "-m", "lorafleet.train", str(data), "--base", str(base),
            "--out", str(out), *train_args]
    return cmd
