"""The GPU preflight reads: nvidia-smi's recorded answers, the dtype each card takes, the memory the settings need."""

from __future__ import annotations

import os
import stat
import subprocess
from dataclasses import replace

import pytest

from lorafleet.deploy import gpu
from lorafleet.deploy.facts import GpuInContainer
from lorafleet.deploy.settings import Secrets, build_settings

# Answers to gpu.QUERY as nvidia-smi prints them (csv, noheader, nounits), one card a line.
AMPERE = "NVIDIA GeForce RTX 3090, 24576, 8.6, 560.94"
TURING = "NVIDIA GeForce RTX 2080, 8192, 7.5, 560.94"
T4 = "Tesla T4, 15360, 7.5, 535.183.01"
SMALL_TURING = "NVIDIA T600, 4096, 7.5, 566.14"
TOO_SMALL = "NVIDIA T400, 2048, 7.5, 566.14"
PASCAL = "NVIDIA GeForce GTX 1080, 8192, 6.1, 560.94"
# What the query returned on a real driver: an H200 with driver 580.159.04, 2026-12-04 (README, "Train, deploy, measure").
H200 = "NVIDIA H200, 143771, 9.0, 580.159.04"


@pytest.fixture
def gpu_settings(gpu_data):
    return build_settings(gpu_data, Secrets(hf_token="hf_x", api_key="k"))


def parsed(*lines: str) -> list[gpu.Gpu]:
    return gpu.parse_query(lines)


def test_the_fact_runs_the_query_in_a_container_of_the_serving_image():
    command = GpuInContainer().command("vllm/vllm-openai:v0.32.0")
    assert command.startswith("docker run --rm --gpus all --entrypoint nvidia-smi vllm/vllm-openai:v0.32.0 "
                              "--query-gpu=name,memory.total,compute_cap,driver_version --format=csv,noheader,nounits")
    assert GpuInContainer().process([AMPERE, "gpu=ok"]) == {"ok": True, "detail": AMPERE}


@pytest.mark.parametrize("line, name, mib, capability, driver", [
    (AMPERE, "NVIDIA GeForce RTX 3090", 24576, (8, 6), "560.94"),
    (T4, "Tesla T4", 15360, (7, 5), "535.183.01"),
    (H200, "NVIDIA H200", 143771, (9, 0), "580.159.04"),
    ("NVIDIA RTX PRO 6000 Blackwell, Workstation Edition, 97887, 12.0, 580.88", "NVIDIA RTX PRO 6000 Blackwell, "
     "Workstation Edition", 97887, (12, 0), "580.88"),
])
def test_a_line_of_the_answer_is_one_card(line, name, mib, capability, driver):
    assert parsed(line) == [gpu.Gpu(name, mib, capability, driver)]


@pytest.mark.parametrize("answer", [["GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-1)"],
                                    ["NVIDIA GeForce RTX 3090, [N/A], 8.6, 560.94"], ["a, b, c, d"]])
def test_an_answer_that_is_not_the_query_is_named(answer):
    with pytest.raises(gpu.QueryError, match="nvidia-smi answered"):
        gpu.parse_query(answer)


@pytest.mark.parametrize("answer, dtype, because", [
    ([AMPERE], "bfloat16", "compute capability 8.6 (bf16 from 8.0)"),
    ([H200], "bfloat16", "compute capability 9.0"),
    ([TURING], "float32", "compute capability 7.5, below 8.0: no bf16, and Gemma 3 overflows in float16"),
    ([T4], "float32", "Tesla T4 has compute capability 7.5"),
    ([AMPERE, T4], "float32", "Tesla T4"),  # several cards: the weakest decides, whichever vLLM takes
])
def test_auto_takes_bf16_from_compute_capability_8_and_float32_below(answer, dtype, because):
    choice = gpu.choose_dtype("auto", "cuda", parsed(*answer))
    assert choice.dtype == dtype and because in choice.why and choice.card_read and not choice.forced


def test_auto_before_the_image_is_pulled_is_bf16_until_the_card_is_read():
    choice = gpu.choose_dtype("auto", "cuda", None)
    assert choice.dtype == "bfloat16" and not choice.card_read and "read right after the pull" in choice.why


def test_the_cpu_profile_leaves_auto_to_vllm_and_passes_a_forced_dtype():
    assert gpu.choose_dtype("auto", "cpu", None).dtype == ""
    assert gpu.choose_dtype("float32", "cpu", None).dtype == "float32"


@pytest.mark.parametrize("setting", ["bfloat16", "float32", "float16"])
def test_a_forced_dtype_is_served_as_given(setting):
    choice = gpu.choose_dtype(setting, "cuda", parsed(TURING))
    assert choice.dtype == setting and choice.forced and "group_data" in choice.why


def test_float16_is_served_only_when_forced_and_then_warned(gpu_data):
    s = build_settings({**gpu_data, "dtype": "float16"}, Secrets(hf_token="hf_x", api_key="k"))
    assert s.served_dtype == "float16"
    assert any("overflows in float16" in w and "refuses float16 for the gemma3" in w for w in s.warnings)
    assert not [w for w in build_settings(gpu_data, Secrets(hf_token="hf_x", api_key="k")).warnings if "float16" in w]


def test_ampere_turing_and_t4_serve_the_defaults(gpu_settings):
    for line in (AMPERE, TURING, T4, H200):
        gpus = parsed(line)
        assert gpu.problems(gpu_settings, gpu.choose_dtype("auto", "cuda", gpus), gpus) == [], line


def test_a_too_small_card_is_refused_naming_the_settings_to_lower(gpu_settings):
    gpus = parsed(SMALL_TURING)
    [problem] = gpu.problems(gpu_settings, gpu.choose_dtype("auto", "cuda", gpus), gpus)
    assert problem.startswith("NVIDIA T600 has 4096 MiB and gpu_memory_utilization=0.85 gives vLLM 3481 MiB, but "
                              "these settings need about 4291 MiB (weights 1023 (float32), KV cache for one "
                              "max_model_len=32768 sequence 1152, sampler logits for max_num_seqs=256 512, LoRA slots "
                              "max_loras=20 x max_lora_rank=32 580, CUDA context and graphs 1024)")
    assert problem.endswith(": lower max_model_len (1152 MiB), max_loras or max_lora_rank (580 MiB), max_num_seqs "
                            "(512 MiB), or raise gpu_memory_utilization if nothing else uses this GPU")


def test_the_same_card_serves_settings_lowered_as_told(gpu_settings):
    gpus = parsed(SMALL_TURING)
    lowered = replace(gpu_settings, max_model_len=4096)
    assert gpu.problems(lowered, gpu.choose_dtype("auto", "cuda", gpus), gpus) == []


def test_a_card_that_cannot_hold_the_model_at_all_says_so(gpu_settings):
    gpus = parsed(TOO_SMALL)
    lowered = replace(gpu_settings, max_model_len=2048, max_loras=4, max_lora_rank=16, max_num_seqs=16)
    [problem] = gpu.problems(lowered, gpu.choose_dtype("auto", "cuda", gpus), gpus)
    assert problem == ("NVIDIA T400 has 2048 MiB and gpu_memory_utilization=0.85 gives vLLM 1740 MiB, less than "
                       "FunctionGemma's weights in float32 (1023 MiB) and the CUDA context and graphs (about 1024 MiB) "
                       "alone: serve on a card with more memory")


def test_with_several_cards_the_smallest_decides_the_memory(gpu_settings):
    gpus = parsed(AMPERE, SMALL_TURING)
    [problem] = gpu.problems(gpu_settings, gpu.choose_dtype("auto", "cuda", gpus), gpus)
    assert problem.startswith("NVIDIA T600 has 4096 MiB")


def test_forced_bf16_on_turing_and_any_pascal_card_are_refused(gpu_settings):
    gpus = parsed(TURING)
    [problem] = gpu.problems(gpu_settings, gpu.choose_dtype("bfloat16", "cuda", gpus), gpus)
    assert problem == ("dtype='bfloat16' but NVIDIA GeForce RTX 2080 has compute capability 7.5: vLLM refuses bf16 "
                       "below 8.0; set dtype = 'auto' (float32 on this card) or 'float32'")
    gpus = parsed(PASCAL)
    [problem] = gpu.problems(gpu_settings, gpu.choose_dtype("auto", "cuda", gpus), gpus)
    assert "compute capability 6.1: vLLM needs 7.0 or more" in problem and "profile = 'cpu'" in problem


def test_no_card_in_the_answer_is_refused(gpu_settings):
    [problem] = gpu.problems(gpu_settings, gpu.choose_dtype("auto", "cuda", []), [])
    assert "found no GPU" in problem


def test_the_estimate_counts_functiongemmas_own_shape():
    shape = gpu.FUNCTIONGEMMA
    assert shape.lora_width() == 13184  # q 640+1024, k and v 640+256, o 1024+640, gate and up 640+2048, down 2048+640
    assert gpu.estimate_mib(20, 32, 32768, 256, "bfloat16") == {
        "weights": 512, "kv": 576, "logits": 512, "lora": 290, "overhead": 1024}
    assert gpu.estimate_mib(20, 32, 32768, 256, "float32")["weights"] == 1023


def fake_docker(tmp_path, answer: str, rc: int = 0) -> dict:
    """A PATH whose `docker` prints a recorded nvidia-smi answer, as `docker run ... nvidia-smi` would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f"#!/bin/sh\nprintf '%s\\n' '{answer}'\nexit {rc}\n")
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("answer, setting, ok, said", [
    (AMPERE, "auto", True, ""),
    (TURING, "auto", False, "compute capability 7.5 has no bfloat16 (dtype bfloat16): planned before the card could "
                            "be read: run the deploy again, it now reads the card and picks float32"),
    (TURING, "bfloat16", False, "set dtype = auto or float32"),
    (TURING, "float32", True, ""),
    ("NVIDIA RTX PRO 6000 Blackwell, Workstation Edition, 97887, 12.0, 580.88", "auto", True, ""),
    ("NVIDIA Quadro RTX 4000, Mobile, 8192, 7.5, 560.94", "auto", False, "compute capability 7.5 has no bfloat16"),
    ("NVIDIA GeForce RTX 3050, 2048, 8.6, 560.94", "auto", False,
     "2048 MiB x gpu_memory_utilization 0.85 is below the about 2914 MiB these settings need"),
])
def test_after_a_first_pull_the_same_query_stops_where_preflight_would_have(tmp_path, gpu_settings, answer, setting,
                                                                             ok, said):
    command = gpu.pulled_check_command(gpu_settings, "vllm/vllm-openai:v0.32.0",
                                       gpu.choose_dtype(setting, "cuda", None))
    result = subprocess.run(["bash", "-c", command], env=fake_docker(tmp_path, answer), capture_output=True, text=True)
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    assert answer in result.stdout and said in result.stdout


def test_after_a_first_pull_a_container_without_the_gpu_fails_with_dockers_words(tmp_path, gpu_settings):
    error = "could not select device driver with capabilities: [[gpu]]"
    command = gpu.pulled_check_command(gpu_settings, "vllm/vllm-openai:v0.32.0", gpu.choose_dtype("auto", "cuda", None))
    result = subprocess.run(["bash", "-c", command], env=fake_docker(tmp_path, error, rc=125), capture_output=True,
                            text=True)
    assert result.returncode == 1 and error in result.stdout
