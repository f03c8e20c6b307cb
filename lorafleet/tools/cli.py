"""``lorafleet``: the operator's command line (status, check, bench, train, eval).

Every command that talks to the server finds it the same way (see
:mod:`lorafleet.tools.endpoint`): ``--url``/``--api-key``, else ``LORAFLEET_URL`` and
``LORAFLEET_API_KEY``/``VLLM_API_KEY``, else the project's ``.secrets.env`` or
``.state/api-key``, else ``http://127.0.0.1:8000`` without a key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from lorafleet.tools import bench, check
from lorafleet.tools import eval as evaluation
from lorafleet.tools.endpoint import Endpoint, resolve_endpoint
from lorafleet.train import cli as train_cli


def _endpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="server URL, or the endpoint ending in /v1 (env LORAFLEET_URL; default http://127.0.0.1:8000)")
    p.add_argument("--api-key", help="API key (env LORAFLEET_API_KEY or VLLM_API_KEY, else .state/api-key)")


def _endpoint(args: argparse.Namespace) -> Endpoint:
    return resolve_endpoint(url=args.url, api_key=args.api_key)


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", action="store_true",
                   help="the router and every box of the inventory's fleet, each with its own key (not --url/--api-key)")
    p.add_argument("--inventory", help="with --fleet: the inventory file (env LORAFLEET_INVENTORY; default inventory.py)")


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``lorafleet`` argument parser."""
    parser = argparse.ArgumentParser(prog="lorafleet", description="Operate a lorafleet multi-LoRA vLLM server.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("status", help="is the server up, what does it serve, how busy is it")
    _endpoint_args(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP call (default 10)")
    p.add_argument("--watch", type=_positive, nargs="?", const=5.0, metavar="SECONDS",
                   help="refresh every SECONDS (default 5) until Ctrl-C; with --json, one JSON document per line")
    _fleet_args(p)

    p = sub.add_parser("check", help="send one request to the base model and to every adapter")
    _endpoint_args(p)
    check.add_options(p)
    _fleet_args(p)

    p = sub.add_parser("bench", help="load test across adapters; 'bench compare A.json B.json' compares runs",
                       description="Load a lorafleet server across chosen adapters; report requests/s, "
                       "tokens/s, TTFT and end-to-end latency per adapter. "
                       "'lorafleet bench compare A.json B.json' puts two saved runs side by side.")
    _endpoint_args(p)
    bench.add_arguments(p)

    p = sub.add_parser("train", help="train a LoRA adapter vLLM can serve from OpenAI fine-tuning JSONL",
                       description=train_cli.build_parser().description)
    train_cli.add_arguments(p)

    p = sub.add_parser("eval", help="score served models on held-out examples: function name, whole call, no call",
                       description="Send held-out examples to served models through the "
                       "openai client and score their calls, side by side.")
    _endpoint_args(p)
    evaluation.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lorafleet`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "compare"]:
        return bench.main_compare(argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fleet", False):
        from lorafleet.tools import fleet

        if args.url or args.api_key:
            parser.error("--fleet reads the router, the boxes and their keys from the inventory: drop --url/--api-key")
        if args.command == "status":
            return fleet.run_status(fleet.inventory_path(args.inventory), as_json=args.json, timeout=args.timeout,
                                    watch=args.watch)
        return fleet.run_check(fleet.inventory_path(args.inventory), args)
    if getattr(args, "inventory", None):
        parser.error("--inventory goes with --fleet")
    if args.command == "status":
        from lorafleet.tools.status import run_status

        return run_status(_endpoint(args), as_json=args.json, timeout=args.timeout, watch=args.watch)
    if args.command == "check":
        endpoint = _endpoint(args)
        return check.run(endpoint.server_url, endpoint.api_key, args)
    if args.command == "bench":
        try:
            return bench.main_bench(_endpoint(args), args)
        except KeyboardInterrupt:
            print("bench interrupted: no results written", file=sys.stderr)
            return 130
    if args.command == "train":
        return train_cli.run(args)
    if args.command == "eval":
        return evaluation.run(_endpoint(args), args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
