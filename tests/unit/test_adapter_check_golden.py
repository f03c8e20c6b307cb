"""The adapter check on every shape of adapter the tests know, written out against a golden file.

tests/fixtures/adapter_check_messages.txt holds, for each case, every problem and warning the user
reads (the case's folder written as <dir>), and the module names the check resolves targets against.
After a deliberate change, write it anew with LORAFLEET_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorafleet.adapters import check
from lorafleet.adapters.check import KNOWN_BASES, Base, check_adapter
from tests.unit.test_adapter_check import HUB_BASE, SERVED, adapter, safetensors
from tests.support.golden import matches_golden

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "adapter_check_messages.txt"
Q = "base_model.model.model.layers.0.self_attn.q_proj"
DEMO = Base.named(check.DEMO_BASE_NAME)


def local_base(tmp_path: Path, name: str, **config) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**KNOWN_BASES[HUB_BASE], **config}))
    return str(folder)


def cases(tmp_path: Path) -> list[tuple[str, str, Base, int]]:
    """(name, adapter folder, served base, max_lora_rank)"""
    same = local_base(tmp_path, "copy-of-the-base")
    other = local_base(tmp_path, "another-model", num_hidden_layers=26, hidden_size=1152, vocab_size=1)
    named = local_base(tmp_path, "named-copy", _name_or_path=HUB_BASE, num_hidden_layers=1)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    link = str(tmp_path / "link-to-upload")
    os.symlink(no_config, link)
    c = [
        ("a plain LoRA", adapter(tmp_path, "plain"), SERVED, 32),
        ("rank above max", adapter(tmp_path, "r64", r=64), SERVED, 32),
        ("rank at max", adapter(tmp_path, "r32", r=32), SERVED, 32),
        ("rank not whole", adapter(tmp_path, "r-half", r=0.5), SERVED, 32),
        ("rank true", adapter(tmp_path, "r-true", r=True), SERVED, 32),
        ("rank zero", adapter(tmp_path, "r0", r=0), SERVED, 32),
        ("rank_pattern above max", adapter(tmp_path, "rp", rank_pattern={"q_proj": 64, "v_proj": 8}), SERVED, 32),
        ("rank_pattern not whole", adapter(tmp_path, "rp-bad", rank_pattern={"q_proj": "8"}), SERVED, 32),
        ("rank_pattern not an object", adapter(tmp_path, "rp-list", rank_pattern=[1]), SERVED, 32),
        ("alpha_pattern not an object", adapter(tmp_path, "ap-list", alpha_pattern="x"), SERVED, 32),
        ("alpha_pattern scaling", adapter(tmp_path, "ap", alpha_pattern={"q_proj": 64}), SERVED, 32),
        ("DoRA", adapter(tmp_path, "dora", use_dora=True), SERVED, 32),
        ("modules_to_save", adapter(tmp_path, "mts", modules_to_save=["lm_head"]), SERVED, 32),
        ("lora_bias", adapter(tmp_path, "bias", lora_bias=True), SERVED, 32),
        ("init pissa", adapter(tmp_path, "pissa", init_lora_weights="pissa"), SERVED, 32),
        ("init loftq", adapter(tmp_path, "loftq", init_lora_weights="loftq"), SERVED, 32),
        ("init gaussian", adapter(tmp_path, "gauss", init_lora_weights="Gaussian"), SERVED, 32),
        ("init true", adapter(tmp_path, "init-true", init_lora_weights=True), SERVED, 32),
        ("not LoRA", adapter(tmp_path, "ia3", peft_type="IA3"), SERVED, 32),
        ("peft_type lower case", adapter(tmp_path, "lower", peft_type="lora"), SERVED, 32),
        ("targets .*", adapter(tmp_path, "all", target_modules=".*"), SERVED, 32),
        ("targets a regex of projections", adapter(tmp_path, "regex", target_modules=r".*\.(q_proj|v_proj)"), SERVED, 32),
        ("targets lm_head by name", adapter(tmp_path, "head", target_modules=["q_proj", "lm_head"]), SERVED, 32),
        ("targets embed_tokens", adapter(tmp_path, "embed", target_modules=["embed_tokens"]), SERVED, 32),
        ("targets .* but lm_head and embed excluded", adapter(
            tmp_path, "excl", target_modules=".*", exclude_modules=["lm_head", "embed_tokens"]), SERVED, 32),
        ("targets another model's modules", adapter(tmp_path, "c_attn", target_modules=["c_attn"]), SERVED, 32),
        ("targets all-linear", adapter(tmp_path, "all-linear", target_modules="all-linear"), SERVED, 32),
        ("targets a bad regex", adapter(tmp_path, "bad-regex", target_modules="(q_proj"), SERVED, 32),
        ("targets a list with a number", adapter(tmp_path, "bad-list", target_modules=["q_proj", 3]), SERVED, 32),
        ("targets on a base of unknown shape", adapter(tmp_path, "unknown-base", target_modules=["c_attn"]),
         Base(names=("someone/model",)), 32),
        ("targets on the demo base", adapter(tmp_path, "demo-targets", target_modules=r"model\.layers\.1\..*",
                                             base_model_name_or_path=check.DEMO_BASE_NAME), DEMO, 32),
        ("base recorded with another owner", adapter(tmp_path, "owner", base_model_name_or_path="someone/functiongemma-270m-it"), SERVED, 32),
        ("base recorded in other case and a slash", adapter(tmp_path, "case", base_model_name_or_path="Google/FunctionGemma-270M-it/"), SERVED, 32),
        ("base not recorded", adapter(tmp_path, "no-base", base_model_name_or_path=None), SERVED, 32),
        ("base not recorded, check off", adapter(tmp_path, "no-base-off", base_model_name_or_path=None), None, 32),
        ("base a Colab folder", adapter(tmp_path, "colab", base_model_name_or_path="/content/functiongemma-270m-it"), SERVED, 32),
        ("base a Windows folder", adapter(tmp_path, "win", base_model_name_or_path="C:\\models\\fg"), SERVED, 32),
        ("base a home folder", adapter(tmp_path, "home", base_model_name_or_path="~/models/nowhere-here"), SERVED, 32),
        ("base ~/fg", adapter(tmp_path, "tilde", base_model_name_or_path="~/fg-nowhere"), SERVED, 32),
        ("base ./fg", adapter(tmp_path, "dot", base_model_name_or_path="./fg-nowhere"), SERVED, 32),
        ("base D:fg", adapter(tmp_path, "drive", base_model_name_or_path="D:fg-nowhere"), SERVED, 32),
        ("base models\\fg", adapter(tmp_path, "backslash", base_model_name_or_path="models\\fg"), SERVED, 32),
        ("base a/b/c", adapter(tmp_path, "deep", base_model_name_or_path="a/b/c"), SERVED, 32),
        ("peft_type missing", adapter(tmp_path, "no-type", peft_type=None), SERVED, 32),
        ("rank 1", adapter(tmp_path, "r1", r=1), SERVED, 32),
        ("rank_pattern at max", adapter(tmp_path, "rp-max", rank_pattern={"q_proj": 32}), SERVED, 32),
        ("exclude_modules not names", adapter(tmp_path, "bad-exclude", exclude_modules=[3]), SERVED, 32),
        ("base a local copy", adapter(tmp_path, "copy", base_model_name_or_path=same), SERVED, 32),
        ("base a local copy named in its config", adapter(tmp_path, "named", base_model_name_or_path=named), SERVED, 32),
        ("base a local other model", adapter(tmp_path, "other", base_model_name_or_path=other), SERVED, 32),
        ("base a local folder without config", adapter(tmp_path, "noconf", base_model_name_or_path=str(no_config)), SERVED, 32),
        ("base a local copy, served base of unknown config", adapter(tmp_path, "unknown", base_model_name_or_path=same),
         Base(names=("someone/model",)), 32),
        ("base the uploaded folder", adapter(tmp_path, "upload", base_model_name_or_path=str(no_config)),
         Base(names=(str(no_config),), folder=str(no_config)), 32),
        ("base the uploaded folder through a link", adapter(tmp_path, "upload-link", base_model_name_or_path=link),
         Base(names=(str(no_config),), folder=str(no_config)), 32),
        ("base another local model than the uploaded one", adapter(tmp_path, "upload-other", base_model_name_or_path=other),
         Base(names=(str(no_config),), config=dict(KNOWN_BASES[HUB_BASE]), folder=str(no_config)), 32),
        ("base named with a trailing slash", adapter(tmp_path, "slash", base_model_name_or_path=str(no_config)),
         Base(names=(str(no_config) + "/",), folder=str(no_config) + "/"), 32),
        ("weights for lm_head", adapter(tmp_path, "w-head", weights={
            "base_model.model.lm_head.lora_A.weight": [8, 640], "base_model.model.lm_head.lora_B.weight": [262144, 8]}),
         SERVED, 32),
        ("weights of rank 64 in A", adapter(tmp_path, "w-a64", weights={f"{Q}.lora_A.weight": [64, 640]}), SERVED, 32),
        ("weights of rank 64 in B", adapter(tmp_path, "w-b64", weights={f"{Q}.lora_B.weight": [1024, 64]}), SERVED, 32),
        ("weights of rank 32 in A and B", adapter(tmp_path, "w-32", weights={
            f"{Q}.lora_A.weight": [32, 640], f"{Q}.lora_B.weight": [1024, 32]}), SERVED, 32),
        ("weights with no tensors", adapter(tmp_path, "w-none", weights={}), SERVED, 32),
    ]
    pickle_only = Path(adapter(tmp_path, "pickle"))
    (pickle_only / check.SAFETENSORS).unlink()
    (pickle_only / check.PICKLE).write_bytes(b"not even a pickle")
    no_weights = Path(adapter(tmp_path, "no-weights"))
    (no_weights / check.SAFETENSORS).unlink()
    truncated = Path(adapter(tmp_path, "truncated"))
    (truncated / check.SAFETENSORS).write_bytes(safetensors({f"{Q}.lora_A.weight": [8, 640]})[:-4])
    huge_header = Path(adapter(tmp_path, "huge-header"))
    (huge_header / check.SAFETENSORS).write_bytes((10**9).to_bytes(8, "little") + b"{}")
    both = Path(adapter(tmp_path, "both"))
    (both / check.PICKLE).write_bytes(b"x")
    no_config_at_all = tmp_path / "empty"
    no_config_at_all.mkdir()
    not_json = Path(adapter(tmp_path, "not-json"))
    (not_json / "adapter_config.json").write_text("{not json")
    a_list = Path(adapter(tmp_path, "a-list"))
    (a_list / "adapter_config.json").write_text("[1, 2]")
    header_just_too_long = Path(adapter(tmp_path, "header-just-too-long"))
    (header_just_too_long / check.SAFETENSORS).write_bytes((5).to_bytes(8, "little") + b"{}")
    with_metadata = Path(adapter(tmp_path, "with-metadata"))
    raw = json.dumps({"__metadata__": {"format": "pt"}, f"{Q}.lora_A.weight": {
        "dtype": "F32", "shape": [8, 1], "data_offsets": [0, 32]}}).encode()
    (with_metadata / check.SAFETENSORS).write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 32)
    c += [("a header 3 bytes longer than the file", str(header_just_too_long), SERVED, 32),
          ("weights with metadata", str(with_metadata), SERVED, 32),
          ("weights named lora_A.weight alone", adapter(tmp_path, "w-short", weights={"lora_A.weight": [64, 640]}), SERVED, 32),
          ("weights named x.lora_A.weight", adapter(tmp_path, "w-three", weights={"x.lora_A.weight": [64, 640]}), SERVED, 32),
          ("base /fg", adapter(tmp_path, "root-folder", base_model_name_or_path="/fg-nowhere"), SERVED, 32),
          ("two matrices above max", adapter(tmp_path, "w-two", weights={
              f"{Q}.lora_A.weight": [64, 640], f"{Q}.lora_B.weight": [1024, 64]}), SERVED, 32)]
    c += [("a pickle only", str(pickle_only), SERVED, 32), ("no weights", str(no_weights), SERVED, 32),
          ("truncated weights", str(truncated), SERVED, 32), ("a header longer than the file", str(huge_header), SERVED, 32),
          ("safetensors and a pickle", str(both), SERVED, 32), ("no adapter_config.json", str(no_config_at_all), SERVED, 32),
          ("adapter_config.json not JSON", str(not_json), SERVED, 32), ("adapter_config.json a list", str(a_list), SERVED, 32)]
    return c


def test_every_adapter_case_reads_as_the_golden_file_says(tmp_path):
    lines = []
    for name, folder, base, rank in cases(tmp_path):
        problems, warnings = check_adapter(folder, rank, base, check_base=base is not None)
        lines.append(f"== {name}")
        lines += [f"! {p}" for p in problems] + [f"? {w}" for w in warnings] or ["ok"]
    lines.append("== module names of the demo base")
    lines += check.module_names(KNOWN_BASES[check.DEMO_BASE_NAME])
    lines.append(f"== module names of FunctionGemma: {len(check.module_names(KNOWN_BASES[HUB_BASE]))}")
    text = "\n".join(lines).replace(str(tmp_path), "<dir>") + "\n"
    matches_golden(GOLDEN, text)


@pytest.mark.parametrize("argv_extra, status, stderr", [
    (["--base-model", HUB_BASE, "--name", "sql"], 0, ""),
    (["--base-model", "someone/else", "--name", "sql"], 1, "adapter sql: trained on base_model_name_or_path="),
    ([], 0, ""),
])
def test_the_command_line_prints_each_problem_with_the_adapters_name(tmp_path, capsys, argv_extra, status, stderr):
    folder = adapter(tmp_path)
    assert check.main([folder, "--max-lora-rank", "32", *argv_extra]) == status
    err = capsys.readouterr().err
    assert (stderr in err) if stderr else err == ""


def test_the_command_line_warns_naming_the_adapter(tmp_path, capsys):
    folder = adapter(tmp_path, base_model_name_or_path=None)
    assert check.main([folder, "--max-lora-rank", "32", "--base-model", HUB_BASE, "--name", "sql"]) == 0
    assert capsys.readouterr().err.startswith("lorafleet: warning: adapter sql: adapter_config.json records no base")


def test_the_known_bases_are_the_models_the_project_serves():
    """FunctionGemma's identity as gpu.py sizes it (from its published config), the demo's as demo_models.py
    builds it: a local copy of either is recognised by these values."""
    import ast

    from lorafleet.deploy.gpu import FUNCTIONGEMMA as fg

    assert KNOWN_BASES[HUB_BASE] == {
        "model_type": "gemma3_text", "num_hidden_layers": fg.layers, "hidden_size": fg.hidden,
        "intermediate_size": fg.intermediate, "num_attention_heads": fg.heads, "num_key_value_heads": fg.kv_heads,
        "head_dim": fg.head_dim, "vocab_size": fg.vocab}
    source = (Path(__file__).resolve().parents[2] / "files" / "models" / "demo_models.py").read_text()
    call = next(node for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Gemma3TextConfig")
    built = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
    demo = KNOWN_BASES[check.DEMO_BASE_NAME]
    assert demo == {"model_type": "gemma3_text", **{key: built[key] for key in demo if key != "model_type"}}
    assert check.DEMO_BASE_NAME == "lorafleet/functiongemma-demo"


@pytest.mark.parametrize("init", ["gaussian", "eva", "orthogonal", "mica", "lora_ga", "EVA"])
def test_each_init_vllm_serves_passes(tmp_path, init):
    assert check_adapter(adapter(tmp_path, init_lora_weights=init), 32, SERVED) == ([], [])


@pytest.mark.parametrize("model_type", ["gemma", "gemma2", "gemma3", "gemma3_text", "llama", "mistral", "qwen2", "qwen3"])
def test_bases_named_as_llama_is_have_projections_to_target(model_type):
    names = check.module_names({"model_type": model_type, "num_hidden_layers": 1})
    assert "model.layers.0.self_attn.q_proj" in names and "model.layers.0.mlp.down_proj" in names
    assert check.module_names({"model_type": "gpt2", "num_hidden_layers": 1}) == ["lm_head", "model.embed_tokens"]


def test_the_base_is_checked_unless_asked_not_to(tmp_path):
    folder = adapter(tmp_path, base_model_name_or_path="someone/else")
    assert check.check_adapter_dir(folder, 32, SERVED) and check.check_adapter(folder, 32, SERVED)[0]
    assert check.check_adapter_dir(folder, 32, SERVED, check_base=False) == []
    assert check.check_adapter_dir(folder, 32, HUB_BASE), "a hub id stands for its base"


def test_the_served_base_cannot_change_once_read():
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        SERVED.names = ("other",)  # type: ignore[misc]


def test_the_command_line_needs_the_rank(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        check.main([adapter(tmp_path)])
    assert exited.value.code == 2 and "--max-lora-rank" in capsys.readouterr().err
