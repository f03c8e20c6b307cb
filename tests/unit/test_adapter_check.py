"""The adapter check (lorafleet/adapters/check.py): each way vLLM would refuse or misserve an adapter, and the good ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.adapters import check
from lorafleet.adapters.check import KNOWN_BASES, Base, check_adapter
from lorafleet.adapters.declared import served_base
from lorafleet.deploy import gpu

HUB_BASE = "google/functiongemma-270m-it"
SERVED = Base.named(HUB_BASE)


def safetensors(tensors: dict[str, list[int]]) -> bytes:
    """A valid safetensors file of float32 zeros with these names and shapes."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for n in shape:
            size *= n
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + b"\0" * offset


def adapter(tmp_path: Path, name: str = "sql", weights: dict | None = None, **config) -> str:
    folder = tmp_path / name
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
              "base_model_name_or_path": HUB_BASE, **config}
    (folder / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    weights = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [8, 640],
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": [1024, 8]} if weights is None else weights
    (folder / "adapter_model.safetensors").write_bytes(safetensors(weights))
    return str(folder)


def problems_of(path: str, base: Base = SERVED, rank: int = 32) -> list[str]:
    return check_adapter(path, rank, base)[0]


def test_a_plain_lora_on_the_served_hub_id_passes(tmp_path):
    assert check_adapter(adapter(tmp_path), 32, SERVED) == ([], [])
    assert problems_of(adapter(tmp_path, "upper", base_model_name_or_path="Google/FunctionGemma-270m-it/")) == []


# --- The base: its hub id, or a local copy recognised by its config, never by its folder's name -------------------

def test_a_hub_id_sharing_only_the_last_part_is_refused(tmp_path):
    [problem] = problems_of(adapter(tmp_path, base_model_name_or_path="someone/functiongemma-270m-it"))
    assert "trained on base_model_name_or_path='someone/functiongemma-270m-it'" in problem
    assert f"the served base is {HUB_BASE!r}" in problem and "check_adapter_base = False" in problem


def local_model(tmp_path: Path, name: str, **changes) -> str:
    folder = tmp_path / "models" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"],
                                                    **KNOWN_BASES[HUB_BASE], **changes}))
    return str(folder)


def test_a_local_copy_is_recognised_by_its_config_not_its_folder_name(tmp_path):
    copy = local_model(tmp_path, "any-name-at-all")
    assert problems_of(adapter(tmp_path, "copy", base_model_name_or_path=copy)) == []
    other = local_model(tmp_path, "functiongemma-270m-it", num_hidden_layers=26, hidden_size=1152)
    [problem] = problems_of(adapter(tmp_path, "other", base_model_name_or_path=other))
    assert "a local model that is not the served base" in problem
    assert "num_hidden_layers=26 where the served base has 18" in problem and "retrain on the served base" in problem


def test_a_local_base_that_is_not_here_cannot_be_recognised(tmp_path):
    for index, recorded in enumerate(("/content/functiongemma-270m-it", "~/nowhere/functiongemma-270m-it", "C:\\fg")):
        [problem] = problems_of(adapter(tmp_path, f"a{index}", base_model_name_or_path=recorded))
        assert "a folder that is not on this machine" in problem and f"({HUB_BASE!r})" in problem


def test_a_missing_base_record_is_a_warning_not_a_silent_pass(tmp_path):
    problems, warnings = check_adapter(adapter(tmp_path, base_model_name_or_path=None), 32, SERVED)
    assert problems == [] and len(warnings) == 1
    assert "records no base_model_name_or_path" in warnings[0] and HUB_BASE in warnings[0]
    assert check_adapter(adapter(tmp_path, "off", base_model_name_or_path=None), 32, SERVED, check_base=False) == ([], [])


def test_an_uploaded_base_is_known_by_its_folder_its_recorded_hub_id_and_its_identity(tmp_path):
    upload = local_model(tmp_path, "my-upload")
    base = served_base("upload", upload)
    assert HUB_BASE in base.names and base.folder == upload
    assert problems_of(adapter(tmp_path, "by-folder", base_model_name_or_path=upload), base) == []
    assert problems_of(adapter(tmp_path, "by-hub-id"), base) == []
    _, [warning] = check_adapter(adapter(tmp_path, "unrecorded", base_model_name_or_path=None), 32, base)
    assert f"write the served base's hub id there ({HUB_BASE!r})" in warning
    other = served_base("upload", local_model(tmp_path, "bigger", num_hidden_layers=26))
    assert HUB_BASE not in other.names
    assert "but the served base is" in problems_of(adapter(tmp_path, "elsewhere"), other)[0]


def test_the_known_bases_are_the_projects_own_figures():
    shape = gpu.FUNCTIONGEMMA
    assert KNOWN_BASES[HUB_BASE] == {"model_type": "gemma3_text", "num_hidden_layers": shape.layers,
                                     "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
                                     "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads,
                                     "head_dim": shape.head_dim, "vocab_size": shape.vocab}
    demo = (Path(__file__).resolve().parents[2] / "files/models/demo_models.py").read_text()
    built = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", demo[demo.index("Gemma3TextConfig("):])}
    known = KNOWN_BASES[check.DEMO_BASE_NAME]
    assert {k: built[k] for k in known if k != "model_type"} == {k: v for k, v in known.items() if k != "model_type"}


# --- Ranks, features vLLM refuses, targets --------------------------------------------------------------------

def test_every_rank_is_checked_including_the_per_module_patterns(tmp_path):
    [problem] = problems_of(adapter(tmp_path, rank_pattern={"q_proj": 64}, alpha_pattern={"q_proj": 128}))
    assert "rank_pattern['q_proj']=64 is above max_lora_rank=32" in problem and "raise max_lora_rank" in problem
    wide = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": [64, 640]}
    [problem] = problems_of(adapter(tmp_path, "wide", weights=wide))
    assert "q_proj.lora_A.weight has rank 64, above max_lora_rank=32" in problem


def test_patterns_are_served_per_module_as_peft_applies_them_so_only_their_ranks_are_checked(tmp_path):
    # vLLM 0.32's PEFTHelper.get_rank_and_scaling applies rank_pattern and alpha_pattern per module.
    assert problems_of(adapter(tmp_path, rank_pattern={"v_proj": 16})) == []
    assert problems_of(adapter(tmp_path, "scaled", rank_pattern={"v_proj": 16}, alpha_pattern={"v_proj": 64})) == []


def test_what_vllm_refuses_besides_dora_is_refused_with_its_reason(tmp_path):
    [bias] = problems_of(adapter(tmp_path, "bias", lora_bias=True))
    assert "lora_bias=true: vLLM refuses LoRA biases" in bias
    [pissa] = problems_of(adapter(tmp_path, "pissa", init_lora_weights="pissa"))
    assert "init_lora_weights='pissa': vLLM refuses it" in pissa
    assert problems_of(adapter(tmp_path, "gaussian", init_lora_weights="gaussian")) == []
    assert problems_of(adapter(tmp_path, "plain", init_lora_weights=True)) == []


@pytest.mark.parametrize("config,expected", [
    ({"use_dora": True}, "use_dora=true: a DoRA adapter, which vLLM cannot serve"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save=['lm_head']: vLLM serves only the LoRA matrices"),
    ({"target_modules": ".*"}, "target_modules='.*' reaches lm_head, model.embed_tokens"),
    ({"target_modules": r".*(q_proj|lm_head)"}, "reaches lm_head"),
    ({"target_modules": r"transformer\.h\.\d+\.attn\.c_attn"}, "matches no projection of the served base"),
    ({"target_modules": "(unclosed"}, "target_modules='(unclosed'"),
    ({"target_modules": ["c_attn"]}, "matches no projection of the served base"),
], ids=["dora", "modules_to_save", "regex-everything", "regex-lm_head", "regex-other-model", "bad-regex", "other-model"])
def test_what_vllm_cannot_serve_is_refused_with_the_reason(tmp_path, config, expected):
    found = problems_of(adapter(tmp_path, **config))
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("targets", [r"model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj", r".*\.(gate|up|down)_proj",
                                     "all-linear", ["q_proj", "k_proj", "v_proj", "o_proj"]])
def test_targets_limited_to_the_projections_pass(tmp_path, targets):
    assert problems_of(adapter(tmp_path, target_modules=targets)) == []


def test_a_base_of_another_family_is_checked_only_for_lm_head_and_embed_tokens(tmp_path):
    gpt2 = Base(names=("me/gpt2-upload",), config={"model_type": "gpt2", "num_hidden_layers": 12})
    assert problems_of(adapter(tmp_path, target_modules=["c_attn"], base_model_name_or_path="me/gpt2-upload"), gpt2) == []
    assert "reaches lm_head" in problems_of(adapter(tmp_path, "all", target_modules=".*"), gpt2)[0]


def test_a_regex_is_matched_whole_as_peft_does(tmp_path):
    # lm_head sits at the top of Gemma3ForCausalLM: no dot before it, so this regex never reaches it.
    assert problems_of(adapter(tmp_path, target_modules=r".*\.(q_proj|lm_head)")) == []


def test_everything_but_excluded_lm_head_and_embeddings_passes(tmp_path):
    assert problems_of(adapter(tmp_path, target_modules=".*", exclude_modules=["lm_head", "embed_tokens"])) == []


def test_weights_for_lm_head_are_refused_whatever_the_config_says(tmp_path):
    tensors = {"base_model.model.lm_head.lora_A.weight": [8, 640]}
    assert any("holds base_model.model.lm_head.lora_A.weight" in p for p in problems_of(adapter(tmp_path, weights=tensors)))


# --- Weights ---------------------------------------------------------------------------------------------------

def test_a_bin_file_is_refused_with_the_conversion_command(tmp_path):
    folder = Path(adapter(tmp_path))
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    [problem] = problems_of(str(folder))
    assert "adapter_model.bin is a torch pickle" in problem and check.CONVERT in problem
    (folder / "adapter_model.bin").write_bytes(b"garbage, not a pickle")
    assert problems_of(str(folder)) == [problem]


def test_a_bin_beside_safetensors_is_not_what_vllm_reads(tmp_path):
    folder = Path(adapter(tmp_path))
    (folder / "adapter_model.bin").write_bytes(b"garbage")
    assert problems_of(str(folder)) == []


# --- On the host: the same check as a script ------------------------------------------------------------------

def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, check.__file__, *args], capture_output=True, text=True, timeout=60)


def test_the_script_takes_the_bases_names_and_identity(tmp_path):
    config = json.dumps(KNOWN_BASES[HUB_BASE])
    good = run_script(adapter(tmp_path), "--max-lora-rank", "32", "--name", "sql", "--base-config", config,
                      "--base-model", "/laptop/upload", "--base-model", HUB_BASE)
    assert good.returncode == 0, good.stderr
    bad = run_script(adapter(tmp_path, "spoof", base_model_name_or_path="someone/functiongemma-270m-it",
                             target_modules=".*"),
                     "--max-lora-rank", "32", "--name", "spoof", "--base-config", config, "--base-model", HUB_BASE)
    assert bad.returncode == 1
    assert "adapter spoof: trained on base_model_name_or_path='someone/functiongemma-270m-it'" in bad.stderr
    assert "adapter spoof: target_modules='.*' reaches lm_head" in bad.stderr
    unrecorded = run_script(adapter(tmp_path, "plain", base_model_name_or_path=None), "--max-lora-rank", "32",
                            "--name", "plain", "--base-config", config, "--base-model", HUB_BASE)
    assert unrecorded.returncode == 0 and "warning: adapter plain: adapter_config.json records no" in unrecorded.stderr


def test_the_hub_download_checks_against_the_served_bases_names_and_identity():
    import shlex

    from lorafleet.deploy import hub
    from lorafleet.deploy.settings import Secrets, build_settings
    from tests.conftest import group_data

    data = {**group_data("gpu"), "adapters": [{"name": "sql", "hub": "you/sql-lora"}]}
    for check_base in (True, False):
        s = build_settings({**data, "check_adapter_base": check_base}, Secrets(hf_token="hf_x", api_key="k"))
        args = shlex.split(hub.hub_download_command(s, "you/sql-lora", "main", s.adapter_dir("sql"), check_adapter="sql"))
        assert json.loads(args[args.index("--base-config") + 1]) == KNOWN_BASES[HUB_BASE]
        assert [args[i + 1] for i, a in enumerate(args) if a == "--base-model"] == ([HUB_BASE] if check_base else [])


def test_hub_fetch_passes_every_base_name_and_the_identity_to_the_check(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    # A docker that logs each call, one argument a line, and makes the download's folder (its last argument).
    (bin_dir / "docker").write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" ---- >> {log}\n'
                                    'if [[ "$*" == *snapshot_download* ]]; then mkdir -p "${@: -1}"; fi\n')
    (bin_dir / "docker").chmod(0o755)
    script = Path(__file__).resolve().parents[2] / "files/models/hub_fetch.sh"
    args = ["bash", str(script), "--image", "img", "--hub-env", "/dev/null", "--cache-root", str(tmp_path),
            "--serve-mount", "/lorafleet", "--repo", "you/sql-lora", "--revision", "main",
            "--dest", str(tmp_path / "adapters/sql"), "--marker", ".lorafleet-source",
            "--check", "sql", "--max-lora-rank", "32", "--base-config", '{"num_hidden_layers":18}',
            "--base-model", "/laptop/my upload", "--base-model", HUB_BASE]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    # Output to a file, not a pipe: the script's progress loop leaves a `sleep 15` holding a pipe open.
    with open(tmp_path / "out", "w") as out:
        assert subprocess.run(args, env=env, stdout=out, stderr=out, timeout=60).returncode == 0
    check_call = log.read_text().split("----\n")[1].splitlines()
    tail = check_call[check_call.index("/lorafleet/adapter_check.py"):]
    assert tail == ["/lorafleet/adapter_check.py", str(tmp_path / "adapters/sql.partial"), "--name", "sql",
                    "--max-lora-rank", "32", "--base-config", '{"num_hidden_layers":18}',
                    "--base-model", "/laptop/my upload", "--base-model", HUB_BASE]
    without = args[:-4]  # no --base-model: check_adapter_base = False
    (tmp_path / "adapters/sql").rename(tmp_path / "old")
    log.unlink()
    with open(tmp_path / "out", "w") as out:
        assert subprocess.run(without, env=env, stdout=out, stderr=out, timeout=60).returncode == 0
    assert log.read_text().split("----\n")[1].splitlines()[-1] == '{"num_hidden_layers":18}'
