"""The deploy refuses every adapter vLLM would refuse or serve wrong, and every hub source it must pin, before any
operation: pyinfra runs deploy.py against a deployed box (the @fake connector), as in test_deployed_box.py.

Each refusal names the adapter (or the setting), the value and the fix; the good inputs are accepted.
"""

from __future__ import annotations

from pathlib import Path

from tests.plan.test_deployed_box import deploy, deployed_box
from tests.unit.test_adapter_check import HUB_BASE, adapter, local_model

SHA = "0123456789abcdef0123456789abcdef01234567"
NOTHING_RAN = "Take the deploy lock"  # the deploy's first operation


def bad_adapters(tmp_path: Path) -> tuple[list[dict], dict[str, list[str]]]:
    """One adapter per way the check refuses, and what its refusal must say (the adapter, the value, the fix)."""
    made = {
        "spoof": (adapter(tmp_path, "spoof", base_model_name_or_path="someone/functiongemma-270m-it"),
                  ["base_model_name_or_path='someone/functiongemma-270m-it'", f"the served base is {HUB_BASE!r}",
                   "retrain on the served base, or set check_adapter_base = False"]),
        "colab": (adapter(tmp_path, "colab", base_model_name_or_path="/content/functiongemma-270m-it"),
                  ["base_model_name_or_path='/content/functiongemma-270m-it', a folder that is not on this machine",
                   f"write the served base's hub id ({HUB_BASE!r}) there"]),
        "pattern": (adapter(tmp_path, "pattern", rank_pattern={"q_proj": 64}, alpha_pattern={"q_proj": 128}),
                    ["rank_pattern['q_proj']=64 is above max_lora_rank=32", "raise max_lora_rank"]),
        "everything": (adapter(tmp_path, "everything", target_modules=".*"),
                       ["target_modules='.*' reaches lm_head, model.embed_tokens",
                        "retrain with target_modules limited to the attention and MLP projections"]),
        "dora": (adapter(tmp_path, "dora", use_dora=True),
                 ["use_dora=true", "vLLM cannot serve", "retrain it as a plain LoRA (use_dora=False)"]),
        "saved": (adapter(tmp_path, "saved", modules_to_save=["lm_head"]),
                  ["modules_to_save=['lm_head']", "retrain without modules_to_save"]),
        "pickle": (adapter(tmp_path, "pickle"), ["adapter_model.bin is a torch pickle",
                                                 "save_file(torch.load('adapter_model.bin', weights_only=True)",
                                                 "then delete adapter_model.bin"]),
        "looped": (adapter(tmp_path, "looped"), ["a is a symlink to b, part of a loop of links", "remove the link"]),
    }
    pickle = Path(made["pickle"][0])
    (pickle / "adapter_model.safetensors").unlink()
    (pickle / "adapter_model.bin").write_bytes(b"not even a pickle")
    (Path(made["looped"][0]) / "a").symlink_to("b")
    (Path(made["looped"][0]) / "b").symlink_to("a")
    declared = [{"name": name, "path": path} for name, (path, _) in made.items()]
    expected = {f"adapters (name={name!r}) at {path}: ": fragments for name, (path, fragments) in made.items()}
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    declared.append({"name": "file", "path": str(tmp_path / "weights.safetensors")})
    expected[f"adapters[{len(made)}] (name='file'): path="] = ["is a file, not a folder: give the adapter's folder"]
    return declared, expected


def test_every_bad_adapter_is_refused_before_any_operation_naming_it_the_value_and_the_fix(tmp_path):
    declared, expected = bad_adapters(tmp_path)
    data, _ = deployed_box()
    _, output = deploy(tmp_path, {**data, "adapters": declared}, ok=False)
    assert "invalid settings (nothing was changed on the host)" in output and NOTHING_RAN not in output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip().startswith("- adapters")]
    for where, fragments in expected.items():
        found = [line for line in lines if where in line]
        assert found and all(any(f in line for line in found) for f in fragments), (where, found)


def test_good_adapters_are_accepted_and_an_unrecorded_base_is_named_in_a_warning(tmp_path):
    copy = local_model(tmp_path, "my-copy-of-the-base")
    declared = {
        "regex": adapter(tmp_path, "regex", target_modules=r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj"),
        "scaled": adapter(tmp_path, "scaled", rank_pattern={"v_proj": 16}, alpha_pattern={"v_proj": 32}),
        "copy": adapter(tmp_path, "copy", base_model_name_or_path=copy),
        "unrecorded": adapter(tmp_path, "unrecorded", base_model_name_or_path=None),
    }
    data, _ = deployed_box()
    ran, output = deploy(tmp_path, {**data, "adapters": [{"name": n, "path": p} for n, p in declared.items()]})
    assert all(ran.get(f"Upload adapter {name}") is not None for name in declared), sorted(ran)
    assert "adapters (name='unrecorded')" in output and "records no base_model_name_or_path" in output
    assert "adapters (name='copy')" not in output


def test_unpinned_hub_sources_warn_on_every_deploy_and_are_refused_when_pinning_is_required(tmp_path):
    data, _ = deployed_box()  # the base at main; the adapters at revisions abc123 and def456, short of a sha
    for _ in range(2):
        _, output = deploy(tmp_path, data)
        assert "base_model='google/functiongemma-270m-it' is not pinned: revision 'main'" in output
        assert "adapters (name='sql'): hub='you/sql-lora' is not pinned: revision 'abc123'" in output
        assert "git ls-remote https://huggingface.co/you/sql-lora abc123" in output
    _, output = deploy(tmp_path, data, "--data", "require_pinned_revisions=True", ok=False)
    assert "invalid settings (nothing was changed on the host)" in output and NOTHING_RAN not in output
    for where in ("base_model='google/functiongemma-270m-it'", "adapters (name='sql'): hub='you/sql-lora'",
                  "adapters (name='email'): hub='you/email-lora'"):
        assert f"{where} is not pinned" in output and "(require_pinned_revisions = True)" in output
    pinned = {**data, "base_model_revision": SHA,
              "adapters": [{**a, "revision": SHA} for a in data["adapters"]]}
    ran, output = deploy(tmp_path, pinned, "--data", "require_pinned_revisions=True")
    assert "is not pinned" not in output
    # The new revisions are downloaded and checked on the box against the served base's name and identity.
    download = f"Download and check adapter sql (you/sql-lora@{SHA})"
    assert ran.get(download) is True, sorted(ran)
    assert "--check sql --max-lora-rank 32 --base-config" in output
    assert f"--base-model {HUB_BASE}" in output and '"num_hidden_layers":18' in output
