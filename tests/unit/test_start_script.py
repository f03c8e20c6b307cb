"""files/serving/start.sh, run in real bash against a stand-in of the docker CLI.

A real vLLM that fails /health on demand cannot be had in fast tests, so every test here
puts a stand-in `docker` first on PATH: it records each call's argv, answers `compose ... up`
with success or failure as the test asks, and prints log lines for `docker logs`. The script
under test is the shipped one, unchanged. The names say so (`test_fake_docker_`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lorafleet.deploy.layout import FILES_DIR

START = FILES_DIR / "serving" / "start.sh"
SEP = "\x1f"  # between a call's arguments in the calls file: paths and values hold no such byte

# The docker CLI as start.sh uses it. Each call is one line of the calls file, arguments joined by SEP.
# `compose ... up` fails (as compose does when a container is unhealthy at --wait-timeout) while it is
# within the first $FAIL_UPS ups; it keeps a copy of the compose file it was given, so a test sees what
# each `up` started. `logs --tail 40` answers on stdout; `logs --tail 1` answers on stderr, as vLLM's
# logger writes to the container's stderr and `docker logs` relays that on its own stderr.
FAKE_DOCKER = r"""#!/usr/bin/env bash
line=
for a in "$@"; do line+="$a"$'\x1f'; done
echo "$line" >> "$CALLS"
case "$1" in
  compose)
    [[ " $* " == *" up "* ]] || exit 0
    n=$(grep -c $'\x1fup\x1f' "$CALLS")
    args=("$@")
    for i in "${!args[@]}"; do [[ ${args[i]} == -f ]] && cp "${args[i+1]}" "$STATE/up$n.yml"; done
    if [[ -n ${UP_WAITS_FOR_LOGS:-} ]]; then  # stay "starting" until the progress loop has asked for logs this often
        for _ in $(seq 200); do [[ $(grep -c '^logs' "$CALLS") -ge $UP_WAITS_FOR_LOGS ]] && break; /bin/sleep 0.02; done
    fi
    if [[ $n -le ${FAIL_UPS:-0} ]]; then echo "dependency failed to start: container $n is unhealthy" >&2; exit 1; fi
    echo "up $n: Container lorafleet-vllm Healthy"
    ;;
  logs)
    [[ -n ${LOGS_FAIL:-} ]] && { echo "Error response from daemon: No such container" >&2; exit 1; }
    if [[ $2 == --tail && $3 == 1 ]]; then printf '%s' "${LAST_LOG_LINE-}" >&2; [[ -n ${LAST_LOG_LINE-} ]] && echo >&2
    else echo "vLLM log line of $*"; fi
    ;;
esac
exit 0
"""

# The progress loop's `sleep 15` is the only `sleep` start.sh runs (the stand-in docker uses /bin/sleep).
# "quiet" keeps the loop silent for the test's length without holding the script's output open; "fast"
# takes 20 ms, so the loop's lines come at once; "real" is the system's sleep.
SLEEPS = {"quiet": "#!/usr/bin/env bash\nexec /bin/sleep 30 </dev/null >/dev/null 2>&1\n",
          "fast": "#!/usr/bin/env bash\nexec /bin/sleep 0.02\n"}


@dataclass
class Box:
    """A stack folder and its files, as the deploy lays them out, with the stand-in on PATH."""

    root: Path
    compose: Path
    last_good: Path
    failed: Path
    env_file: Path
    env_applied: Path
    calls: Path
    bin: Path

    def args(self, timeout: str = "600", **drop) -> list[str]:
        values = {"--compose-file": self.compose, "--project": "lorafleet-serving", "--container": "lorafleet-vllm",
                  "--timeout": timeout, "--last-good": self.last_good, "--failed": self.failed,
                  "--env-file": self.env_file, "--env-applied": self.env_applied}
        out: list[str] = []
        for flag, value in values.items():
            if flag not in drop.get("without", ()):
                out += [flag, str(value)]
        return out

    def run(self, args: list[str], sleep: str = "quiet", timeout: float = 10,
            **env: str) -> subprocess.CompletedProcess:
        """start.sh with `args`; `sleep`: quiet, fast or real (the system's); `env`: the stand-in's switches."""
        stand_in = self.bin / "sleep"
        stand_in.unlink(missing_ok=True)
        if sleep != "real":
            stand_in.write_text(SLEEPS[sleep])
            stand_in.chmod(0o755)
        full_env = {"PATH": f"{self.bin}:/usr/bin:/bin", "CALLS": str(self.calls), "STATE": str(self.root), **env}
        # umask 022 like a login shell's: the 0600 of --env-applied must come from the script itself.
        proc = subprocess.Popen(["bash", str(START), *args], env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, umask=0o022, start_new_session=True)
        try:
            # A progress loop left running holds the pipes open: then this times out and the test fails.
            out, err = proc.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def docker_calls(self) -> list[list[str]]:
        return [line.split(SEP)[:-1] for line in self.calls.read_text().splitlines()]

    def ups(self) -> list[list[str]]:
        return [c for c in self.docker_calls() if c[0] == "compose" and "up" in c]

    def up_file(self, n: int) -> str:
        return (self.root / f"up{n}.yml").read_text()


NEW = "services: {vllm: {image: 'lorafleet/vllm-cpu:new'}}\n"
GOOD = "services: {vllm: {image: 'lorafleet/vllm-cpu:good'}}\n"


@pytest.fixture
def box(tmp_path: Path) -> Box:
    stack = tmp_path / "stack"
    stack.mkdir()
    b = Box(root=tmp_path, compose=stack / "compose.yml", last_good=stack / "compose.last-good.yml",
            failed=stack / "compose.failed.yml", env_file=stack / "secrets.env",
            env_applied=stack / "secrets.env.applied", calls=tmp_path / "calls", bin=tmp_path / "bin")
    b.bin.mkdir()
    docker = b.bin / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    b.calls.touch()
    b.compose.write_text(NEW)
    b.env_file.write_text("VLLM_API_KEY=sk-the-key\n")
    return b


def up_argv(box: Box, timeout: str = "600") -> list[str]:
    return ["compose", "--project-directory", str(box.compose.parent), "-f", str(box.compose),
            "-p", "lorafleet-serving",
            "up", "-d", "--wait", "--wait-timeout", timeout, "--remove-orphans"]


def test_fake_docker_healthy_up_keeps_the_compose_file_as_last_good_and_records_the_env_applied(box):
    result = box.run(box.args(timeout="1234"))
    assert result.returncode == 0, result.stderr
    assert box.docker_calls() == [up_argv(box, "1234")]  # no logs, no second up
    assert box.last_good.read_text() == NEW
    digest = hashlib.sha1(box.env_file.read_bytes()).hexdigest()
    assert box.env_applied.read_text() == digest + "\n"
    assert stat.S_IMODE(box.env_applied.stat().st_mode) == 0o600
    assert not box.failed.exists()
    assert box.compose.read_text() == NEW
    assert "did not become healthy" not in result.stderr and "rolling back" not in result.stderr
    assert "up 1: Container lorafleet-vllm Healthy" in result.stdout


def test_fake_docker_a_healthy_up_replaces_an_older_last_good_and_env_applied(box):
    box.last_good.write_text(GOOD)
    box.env_applied.write_text("0" * 40 + "\n")
    assert box.run(box.args()).returncode == 0
    assert box.last_good.read_text() == NEW
    assert box.env_applied.read_text() == hashlib.sha1(box.env_file.read_bytes()).hexdigest() + "\n"


@pytest.mark.parametrize("where", ["first", "last"])
def test_fake_docker_force_recreate_reaches_up_wherever_it_is_given(box, where):
    args = box.args()
    args = ["--force-recreate", *args] if where == "first" else [*args, "--force-recreate"]
    result = box.run(args)
    assert result.returncode == 0, result.stderr
    assert box.ups() == [up_argv(box) + ["--force-recreate"]]


def test_fake_docker_no_force_recreate_unless_given(box):
    box.run(box.args())
    assert "--force-recreate" not in box.ups()[0]


def test_fake_docker_an_unknown_argument_exits_2_and_names_it(box):
    result = box.run([*box.args(), "--bogus", "x"])
    assert result.returncode == 2
    assert result.stderr.strip() == "start.sh: unknown argument --bogus"
    assert box.docker_calls() == []


@pytest.mark.parametrize("flag", ["--compose-file", "--project", "--container", "--timeout", "--last-good",
                                  "--failed", "--env-file", "--env-applied"])
def test_fake_docker_every_value_is_required(box, flag):
    variable = flag.removeprefix("--").replace("-", "_")
    result = box.run(box.args(without=(flag,)))
    assert result.returncode != 0
    assert f"{variable}: parameter null or not set" in result.stderr
    assert box.docker_calls() == []


def test_fake_docker_an_empty_value_is_refused_like_a_missing_one(box):
    args = box.args()
    args[args.index("--project") + 1] = ""
    result = box.run(args)
    assert result.returncode != 0 and "project: parameter null or not set" in result.stderr
    assert box.docker_calls() == []


def test_fake_docker_unhealthy_without_last_good_shows_the_logs_and_fails_without_rollback(box):
    result = box.run(box.args(timeout="90"), FAIL_UPS="1")
    assert result.returncode == 1
    assert "lorafleet: vLLM did not become healthy within 90s; last log lines:" in result.stderr
    assert "vLLM log line of logs --tail 40 lorafleet-vllm" in result.stderr  # relayed to stderr
    assert "vLLM log line" not in result.stdout
    assert box.docker_calls() == [up_argv(box, "90"), ["logs", "--tail", "40", "lorafleet-vllm"]]
    assert box.compose.read_text() == NEW
    assert not box.failed.exists() and not box.last_good.exists() and not box.env_applied.exists()
    assert "rolling back" not in result.stderr and "rolled back" not in result.stderr


def test_fake_docker_unhealthy_rolls_back_to_last_good_and_still_fails(box):
    box.last_good.write_text(GOOD)
    result = box.run(box.args(), FAIL_UPS="1")
    assert result.returncode == 1
    assert box.failed.read_text() == NEW  # kept for inspection
    assert box.compose.read_text() == GOOD
    assert box.last_good.read_text() == GOOD  # the failed file never becomes the last good one
    assert not box.env_applied.exists()  # the env of the failed start was not applied
    calls = box.docker_calls()
    assert calls == [up_argv(box), ["logs", "--tail", "40", "lorafleet-vllm"], up_argv(box) + ["--force-recreate"]]
    assert box.up_file(1) == NEW and box.up_file(2) == GOOD  # the rollback's up starts the last good file
    err = result.stderr
    assert err.index("did not become healthy") < err.index("vLLM log line") < err.index(
        "lorafleet: rolling back to the last good compose project") < err.index(
        "lorafleet: rolled back; the last good state is serving")
    assert "up 2: Container lorafleet-vllm Healthy" in err  # the rollback's compose output goes to stderr
    assert "up 2" not in result.stdout


def test_fake_docker_a_failed_rollback_says_so_by_not_claiming_it_and_fails(box):
    box.last_good.write_text(GOOD)
    result = box.run(box.args(), FAIL_UPS="2")
    assert result.returncode == 1
    assert len(box.ups()) == 2
    assert "lorafleet: rolling back to the last good compose project" in result.stderr
    assert "rolled back" not in result.stderr
    assert box.compose.read_text() == GOOD and box.failed.read_text() == NEW


def test_fake_docker_a_forced_recreate_that_fails_rolls_back_with_one_force_recreate(box):
    box.last_good.write_text(GOOD)
    result = box.run([*box.args(), "--force-recreate"], FAIL_UPS="1")
    assert result.returncode == 1
    assert box.ups() == [up_argv(box) + ["--force-recreate"]] * 2


def test_fake_docker_logs_that_fail_do_not_stop_the_rollback(box):
    box.last_good.write_text(GOOD)
    result = box.run(box.args(), FAIL_UPS="1", LOGS_FAIL="1")
    assert result.returncode == 1
    assert len(box.ups()) == 2 and box.compose.read_text() == GOOD
    assert "lorafleet: rolled back; the last good state is serving" in result.stderr


def test_fake_docker_while_up_waits_a_progress_line_counts_time_and_shows_vllms_last_log_line(box):
    line = "INFO 07-01 loading weights " + "x" * 200
    result = box.run(box.args(timeout="300"), sleep="fast", UP_WAITS_FOR_LOGS="3", LAST_LOG_LINE=line)
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stdout.splitlines() if x.startswith("lorafleet: waiting")]
    assert lines[:2] == [f"lorafleet: waiting for /health: {s}s of 300s; vLLM: {line[:120]}" for s in (15, 30)]
    assert ["logs", "--tail", "1", "lorafleet-vllm"] in box.docker_calls()


def test_fake_docker_a_progress_line_before_vllm_logs_anything_says_starting(box):
    result = box.run(box.args(), sleep="fast", UP_WAITS_FOR_LOGS="2", LAST_LOG_LINE="")
    assert "lorafleet: waiting for /health: 15s of 600s; vLLM: starting" in result.stdout.splitlines()


def test_fake_docker_the_progress_loop_ends_with_the_script(box):
    # Were the loop left running it would hold the output pipes open and keep calling docker.
    started = time.monotonic()
    result = box.run(box.args(), sleep="fast", UP_WAITS_FOR_LOGS="1")
    assert result.returncode == 0 and time.monotonic() - started < 5


def test_fake_docker_the_scripts_output_ends_when_it_exits(box):
    # The progress loop's `sleep 15` must not hold stdout and stderr open after the script ends: pyinfra
    # reads them to the end, so every start would wait up to 15 s more.
    started = time.monotonic()
    assert box.run(box.args(), sleep="real", timeout=5).returncode == 0
    assert time.monotonic() - started < 5


def test_fake_docker_an_env_file_that_cannot_be_read_fails_the_start(box):
    # set -e with pipefail: a failed sha1sum fails the script even after a healthy up (the deploy writes
    # the env file first, so something else is wrong); --env-applied is left empty, not a hash of nothing.
    box.env_file.unlink()
    result = box.run(box.args())
    assert result.returncode != 0
    assert "sha1sum" in result.stderr and "No such file" in result.stderr
    assert box.env_applied.read_text() == ""
