"""The deploy on boxes whose cards differ: recorded nvidia-smi answers through the @fake connector.

The box already serves (tests/plan/test_deployed_box.py); only its GPU changes: an Ampere card serves
bf16 and nothing restarts, a Turing card serves float32, a card too small for the settings is refused
in preflight, naming the settings to lower, before any operation.
"""

from __future__ import annotations

import re

from tests.plan.test_deployed_box import SERVING_OPS, START, deployed_box, deploy, executed

TURING = "NVIDIA GeForce RTX 2080, 8192, 7.5, 560.94"
TOO_SMALL = "NVIDIA GeForce RTX 3050, 2048, 8.6, 560.94"


def served_flags(output: str) -> list[str]:
    """The dtype the plan printed for the box."""
    return re.findall(r"dtype (\w+): auto; ", output)


def test_ampere_serves_bf16_and_a_second_deploy_changes_nothing(tmp_path):
    ran, output = deploy(tmp_path, deployed_box()[0])
    assert "dtype bfloat16: auto; NVIDIA GeForce RTX 3090 has compute capability 8.6 (bf16 from 8.0)" in output
    assert not any(ran.get(op) for op in SERVING_OPS) and not executed(output, START)


def test_turing_serves_float32(tmp_path):
    data, _ = deployed_box(gpu_answer=TURING)
    ran, output = deploy(tmp_path, data)
    assert served_flags(output) == ["float32"]
    assert "NVIDIA GeForce RTX 2080 has compute capability 7.5, below 8.0: no bf16" in output
    assert not executed(output, START), "the box already serves float32: nothing to restart"


def test_a_box_that_served_bf16_restarts_once_in_float32_on_a_turing_card(tmp_path):
    data, _ = deployed_box()  # its compose file and server hash are bf16's
    data["fake_responses"]["nvidia-smi"] = [TURING, "gpu=ok"]
    ran, output = deploy(tmp_path, data)
    [start] = executed(output, START)
    assert "--force-recreate" not in start and '"--dtype", "float32"' in output.replace("\\", "")


def test_a_card_too_small_for_the_settings_is_refused_before_anything_changes(tmp_path):
    data, _ = deployed_box(gpu_answer=TOO_SMALL)
    _, output = deploy(tmp_path, data, ok=False)
    assert "preflight failed (nothing was changed)" in output
    assert ("NVIDIA GeForce RTX 3050 has 2048 MiB and gpu_memory_utilization=0.85 gives vLLM 1740 MiB, but these "
            "settings need about 2914 MiB") in output
    assert "lower max_model_len (576 MiB), max_num_seqs (512 MiB), max_loras or max_lora_rank (290 MiB)" in output
    assert "Take the deploy lock" not in output
