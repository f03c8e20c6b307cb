"""``lorafleet``: the operator's command line (status, check, bench, fake-server).

Every command that talks to the server finds it the same way (see
:mod:`lorafleet.tools.endpoint`): ``--url``/``--api-key``, else ``LORAFLEET_URL`` and
``LORAFLEET_API_KEY``/``VLLM_API_KEY``, else ``.state/api-key`` in the project,
else ``http://127.0.0.1:8000`` without a key.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from lorafleet.tools.endpoint import Endpoint, find_project_root, resolve_endpoint


def _endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="server URL (env LORAFLEET_URL; default http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key (env LORAFLEET_API_KEY or VLLM_API_KEY, else .state/api-key)")


def _endpoint(args: argparse.Namespace) -> Endpoint:
    return resolve_endpoint(url=args.url, api_key=args.api_key)


def check_script() -> Path:
    """Path of ``tools/check_endpoint.py`` in this checkout."""
    candidates = [Path(__file__).resolve().parent.parent / "tools" / "check_endpoint.py"]
    root = find_project_root()
    if root:
        candidates.insert(0, root / "tools" / "check_endpoint.py")
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit("tools/check_endpoint.py not found: run lorafleet check from the project checkout")


def run_check(endpoint: Endpoint, extra: Sequence[str]) -> int:
    """Run the standalone check script with the resolved endpoint; the key travels in the environment."""
    env = dict(os.environ)
    env["LORAFLEET_URL"] = endpoint.url
    env.pop("LORAFLEET_API_KEY", None)
    if endpoint.api_key:
        env["LORAFLEET_API_KEY"] = endpoint.api_key  # not on the command line, where ps would show it
    return subprocess.call([sys.executable, str(check_script()), *extra], env=env)


def build_parser() -> argparse.ArgumentParser:
    """The ``lorafleet`` argument parser."""
    from lorafleet.tools import bench
    from tests.support import fake_server

    parser = argparse.ArgumentParser(prog="lorafleet", description="Operate a lorafleet multi-LoRA vLLM server.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", help="is the server up, what does it serve, how busy is it")
    _endpoint_args(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call (default 10)")

    p = sub.add_parser("check", help="send one request to the base model and to every adapter")
    _endpoint_args(p)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per answer (default 120)")
    p.add_argument("--no-tools", action="store_true", help="do not declare tools in the requests")

    p = sub.add_parser("bench", help="load test across adapters; 'bench compare A.json B.json' compares runs",
                       description="Load a lorafleet server across chosen adapters; report requests/s, "
                       "tokens/s, TTFT and end-to-end latency per adapter. "
                       "'lorafleet bench compare A.json B.json' puts two saved runs side by side.")
    _endpoint_args(p)
    bench.add_arguments(p)

    p = sub.add_parser("fake-server", help="an instant local OpenAI-compatible server for testing the tools")
    fake_server.build_parser(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lorafleet`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "compare"]:
        from lorafleet.tools.bench import main_compare

        return main_compare(argv[2:])
    args = build_parser().parse_args(argv)
    if args.command == "status":
        from lorafleet.tools.status import run_status

        return run_status(_endpoint(args), as_json=args.json, timeout=args.timeout)
    if args.command == "check":
        extra = ["--timeout", str(args.timeout)] + (["--no-tools"] if args.no_tools else [])
        return run_check(_endpoint(args), extra)
    if args.command == "bench":
        from lorafleet.tools.bench import main_bench

        try:
            return main_bench(_endpoint(args), args)
        except KeyboardInterrupt:
            print("bench interrupted: no results written", file=sys.stderr)
            return 130
    if args.command == "fake-server":
        from tests.support import fake_server

        return fake_server.run(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
