"""The user's loop on the real CPU stack: train an adapter for a new function, deploy it without a restart,
eval it against the base through the served endpoint and its tool parser."""

from __future__ import annotations

import json
import time

import pytest

from lorafleet.adapters.check import check_adapter_dir
from lorafleet.tools import cli
from lorafleet.train import card, sample
from lorafleet.train.container import docker_command
from lorafleet.train.data import write_jsonl
from tests.support.scenario import API_KEY, sh

SEED = 7
TRAIN_EXAMPLES = 160
# Small and fast on 2 cores: the demo base is tiny; lr and steps as for the demo adapters, not FunctionGemma's.
TRAIN_ARGS = ["--rank", "16", "--alpha", "32", "--lr", "1e-2", "--max-steps", "100", "--batch-size", "16",
              "--seed", str(SEED), "--max-lora-rank", "16"]


@pytest.fixture(scope="module")
def stack(adapters_restored):
    return adapters_restored


@pytest.fixture(scope="module")
def data(stack) -> dict:
    folder = stack.dir / "train"
    folder.mkdir(exist_ok=True)
    paths = {"train": folder / "train.jsonl", "heldout": folder / "heldout.jsonl"}
    write_jsonl(paths["train"], sample.dataset(TRAIN_EXAMPLES, SEED))
    write_jsonl(paths["heldout"], sample.dataset(TRAIN_EXAMPLES // 4, SEED + 1000))
    return paths


@pytest.fixture(scope="module")
def trained(stack, data) -> dict:
    """`python -m lorafleet.train` in a throwaway container of the serving image: CI's venv needs no torch."""
    image = sh("docker", "inspect", "--format", "{{.Config.Image}}", stack.vllm_container()).stdout.strip()
    demo = stack.models_root / "lorafleet-demo"
    out = stack.dir / "laptop" / "timer"
    out.parent.mkdir(parents=True, exist_ok=True)
    cidfile = stack.dir / "train" / "container.id"
    cidfile.unlink(missing_ok=True)
    with stack.phase("train an adapter in the serving image"):
        try:
            base_name = json.loads((demo / "demo.json").read_text())["base_name"]
            args = [*TRAIN_ARGS, "--base-name", base_name, "--overwrite", "--json"]
            result = sh(*docker_command(image, data["train"], demo / "base", out, args, cidfile=cidfile),
                        timeout=900, check=False)
        finally:
            if cidfile.is_file() and cidfile.read_text().strip():  # a timed-out run leaves its container
                sh("docker", "rm", "-f", cidfile.read_text().strip(), check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    stack.report(f"[e2e train] {record['examples']} examples, {record['steps']} steps of 16 on {record['device']} in "
                 f"{record['train_seconds']} s ({record['examples_per_second']} examples/s), "
                 f"final loss {record['final_loss']}")
    return {"path": out, "record": record}


def test_the_trained_adapter_passes_the_deploy_s_check(stack, trained):
    base_name = json.loads((stack.models_root / "lorafleet-demo" / "demo.json").read_text())["base_name"]
    assert check_adapter_dir(str(trained["path"]), stack.data["max_lora_rank"], base_name) == []
    config = json.loads((trained["path"] / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (16, 32, base_name)
    assert not config.get("modules_to_save")
    record = card.read_record(trained["path"])
    assert record["data_sha256"] == trained["record"]["data_sha256"] and record["seed"] == SEED


def test_deploy_it_without_a_restart_and_it_beats_the_base(stack, trained, data, capsys):
    started = stack.vllm_started_at()
    stack.write_inventory(adapters=[*stack.declared, {"name": "timer", "path": str(trained["path"])}])
    with stack.phase("deploy the trained adapter"):
        stack.deploy()
    assert stack.vllm_started_at() == started, "adding a trained adapter restarted vLLM"

    base = stack.data["served_model_name"]
    capsys.readouterr()
    t0 = time.monotonic()
    code = cli.main(["eval", str(data["heldout"]), "--model", base, "--model", "timer",
                     "--url", stack.endpoint, "--api-key", API_KEY, "--json"])
    figures = json.loads(capsys.readouterr().out)["models"]
    assert code == 0, figures
    for model in (base, "timer"):
        f = figures[model]
        stack.report(f"[e2e eval] {model}: function name {f['name_accuracy']:.0%}, whole call {f['call_accuracy']:.0%}, "
                     f"no call when none wanted {f['no_call_accuracy']:.0%} ({f['examples']} held-out examples, "
                     f"{time.monotonic() - t0:.1f} s for both)")
    adapter, plain = figures["timer"], figures[base]
    assert plain["call_accuracy"] == 0.0, "the base never learnt set_timer"
    assert adapter["call_accuracy"] >= 0.8, adapter
    assert adapter["no_call_accuracy"] >= 0.8, adapter
