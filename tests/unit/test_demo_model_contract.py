"""Contract of files/models/build_demo_model.py that needs no torch: names, call text,
manifest reuse (its chat template: test_chat_template.py).  (The trained behaviour is checked by the script itself at
build time and by the infra/e2e suites against a real vLLM.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lorafleet.deploy.layout import DEMO_BUILDER, DEMO_FILES, DEMO_TRAINER
from lorafleet.functiongemma import parse_calls, render_call
from tests.support.modules import load_file

SCRIPT = DEMO_BUILDER

# vLLM 0.32's functiongemma tool parser (vllm/tool_parsers/functiongemma_tool_parser.py)
VLLM_CALL_RE = re.compile(
    r"<start_function_call>call:(\w+)\{(.*?)\}<end_function_call>|<start_function_call>call:(\w+)\{(.*)", re.DOTALL
)
VLLM_ARG_RE = re.compile(r"(\w+):<escape>(.*?)<escape>", re.DOTALL)


@pytest.fixture(scope="module")
def demo():
    return load_file("build_demo_model", SCRIPT)  # stdlib only at import time: torch is imported inside main()


def vllm_parse(text: str) -> list[tuple[str, dict]]:
    calls = []
    for m in VLLM_CALL_RE.findall(text):
        args = {}
        for key, value in VLLM_ARG_RE.findall(m[1] or m[3]):
            try:
                args[key] = json.loads(value)
            except json.JSONDecodeError:
                args[key] = value
        calls.append((m[0] or m[2], args))
    return calls


@pytest.mark.parametrize(
    "name,function,arguments",
    [
        ("weather", "get_weather", {"city": "Paris"}),
        ("sql", "run_sql", {"query": "SELECT 1"}),
        ("email", "send_email", {"to": "ops@example.com"}),
        ("alarm", "set_alarm", {"hour": 7, "volume": 0.5, "enabled": True, "label": "gym, then work",
                                "days": ["mon", "fri"], "snooze": {"minutes": 5, "repeat": 3}, "sound": None}),
        ("billing-bot", "billing_bot_action", {"target": "billing-bot"}),
        ("x1", "x1_action", {"target": "x1"}),
    ],
)
def test_each_adapter_has_its_own_call_that_the_tool_parser_parses(demo, name, function, arguments):
    spec = demo.adapter_spec(name)
    assert (spec["function"], spec["arguments"]) == (function, arguments)
    assert spec["tool"]["function"]["name"] == function
    assert parse_calls(spec["call_text"]) == ("", [(function, arguments)])
    assert spec["call_text"] == render_call(function, arguments), "the demo writes calls as the grammar renders them"
    if all(isinstance(v, str) for v in arguments.values()):
        assert vllm_parse(spec["call_text"]) == [(function, arguments)], "string-only calls parse with vLLM's own parser too"


def fake_build(demo, out: Path, adapters: list[str], base_name: str = "a/b") -> None:
    """What a finished build leaves in DIR, for the reuse checks (no torch)."""
    norm = {"base_name": base_name, "seed": 0, "format": demo.FORMAT_VERSION}
    (out / "base").mkdir(parents=True, exist_ok=True)
    (out / "base" / "config.json").write_text("{}")
    for name in adapters:
        (out / "adapters" / name).mkdir(parents=True, exist_ok=True)
        (out / "adapters" / name / "adapter_config.json").write_text("{}")
    (out / "demo.json").write_text(json.dumps({"inputs_hash": demo.inputs_hash(SCRIPT, norm),
                                               "adapters": [{"name": n} for n in adapters]}))


def test_up_to_date_manifest_is_reused_without_torch(demo, tmp_path, capsys):
    out = tmp_path / "demo"
    fake_build(demo, out, ["weather", "x1", "email"])
    assert demo.main(["--out", str(out), "--adapters", "weather,x1", "--base-name", "a/b"]) == 0
    assert "demo model up to date" in capsys.readouterr().out, "a build of more adapters serves fewer"
    assert demo.held_adapters(out, demo.inputs_hash(SCRIPT, {"base_name": "a/b", "seed": 0, "format": demo.FORMAT_VERSION})) \
        == ["weather", "x1", "email"]
    # Another base name or seed is another build; an adapter whose folder is gone is not held.
    other = {"base_name": "c/d", "seed": 0, "format": demo.FORMAT_VERSION}
    assert demo.held_adapters(out, demo.inputs_hash(SCRIPT, other)) == []
    (out / "adapters" / "x1" / "adapter_config.json").unlink()
    assert demo.held_adapters(out, demo.inputs_hash(SCRIPT, {**other, "base_name": "a/b"})) == ["weather", "email"]


def test_an_adapter_a_build_lacks_is_added_on_its_base_and_the_others_stay(demo, tmp_path, monkeypatch):
    out = tmp_path / "demo"
    fake_build(demo, out, ["weather", "sql"])
    calls = []
    monkeypatch.setattr(demo, "start_build", lambda out, seed: (out / ".build-1").mkdir() or out / ".build-1")
    monkeypatch.setattr(demo, "load_lora", lambda script: "lora")
    monkeypatch.setattr(demo, "add", lambda a, names, *rest: calls.append(("add", names)) or 0)
    monkeypatch.setattr(demo, "build", lambda a, names, *rest: calls.append(("build", names)) or 0)
    assert demo.main(["--out", str(out), "--adapters", "sql,news,weather,mail", "--base-name", "a/b"]) == 0
    assert demo.main(["--out", str(out), "--adapters", "sql", "--base-name", "c/d"]) == 0
    assert demo.main(["--out", str(out), "--adapters", "sql", "--base-name", "a/b", "--force"]) == 0
    assert calls == [("add", ["news", "mail"]), ("build", ["sql"]), ("build", ["sql"])]


def test_an_added_adapter_lands_beside_the_others_and_demo_json_lists_them_all(demo, tmp_path):
    out = tmp_path / "demo"
    fake_build(demo, out, ["weather", "sql"])
    (out / "adapters" / "weather" / "weights").write_text("kept")
    tmp = out / ".build-1"
    (tmp / "adapters" / "news").mkdir(parents=True)
    (tmp / "adapters" / "news" / "adapter_config.json").write_text("{}")
    entries = json.loads((out / "demo.json").read_text())["adapters"] + [{"name": "news"}]
    demo.install(out, tmp, {"inputs_hash": "h", "adapters": entries}, ["adapters/news"])
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["news", "sql", "weather"]
    assert (out / "adapters" / "weather" / "weights").read_text() == "kept"
    assert [e["name"] for e in json.loads((out / "demo.json").read_text())["adapters"]] == ["weather", "sql", "news"]


@pytest.mark.parametrize("names", ["bad name", "a,a", "-x", "a_b,a-b"])
def test_bad_adapter_lists_are_refused(demo, tmp_path, names):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--out", str(tmp_path), "--adapters", names])
    assert exc.value.code == 2


def test_a_second_build_into_the_same_folder_waits_for_the_first_and_reuses_it(demo, tmp_path):
    # Every container's builder has the same pid: without a lock, two builds share one .build-1 folder.
    import fcntl
    import threading

    out = tmp_path / "demo"
    out.mkdir()
    result = {}
    with open(out / ".build.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a build in progress
        waiting = threading.Thread(target=lambda: result.setdefault(
            "code", demo.main(["--out", str(out), "--adapters", "weather", "--base-name", "a/b"])))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive(), "the second build must wait for the lock"
        # the first build finishes: its result is complete
        fake_build(demo, out, ["weather"])
    waiting.join(10)
    assert result == {"code": 0}


def test_the_builder_runs_from_a_folder_at_the_root_as_the_deploy_mounts_it(demo):
    # /demo/build_demo_model.py has no grandparent folder to look for the package in
    assert demo.find_lora(Path("/lorafleet-no-such-folder/build_demo_model.py")) is None


def test_the_deploy_ships_and_hashes_every_part_of_the_builder_in_its_order(demo):
    assert list(DEMO_FILES) == [SCRIPT.name, *demo.BUILDER_PARTS, *demo.SHARED_FILES]
    assert all(path == SCRIPT.parent / name for name, path in DEMO_FILES.items() if name not in demo.SHARED_FILES)
    assert all(DEMO_FILES[name] == demo.find_shared(SCRIPT, name) for name in demo.SHARED_FILES)
    builder_files = [p.name for p in SCRIPT.parent.iterdir() if p.suffix in (".py", ".jinja")]
    assert sorted(builder_files) == sorted([SCRIPT.name, *demo.BUILDER_PARTS])


def test_the_builder_needs_the_shared_files_beside_it(demo, tmp_path, capsys):
    import shutil

    alone = tmp_path / "demo-builder"
    alone.mkdir()
    for name in [SCRIPT.name, *demo.BUILDER_PARTS]:  # the builder's own files, without the shared ones
        shutil.copy(SCRIPT.parent / name, alone / name)
    module = load_file("build_demo_model_alone", alone / SCRIPT.name)
    assert module.main(["--out", str(tmp_path / "out")]) == 2
    assert "functiongemma.py (lorafleet/functiongemma.py, shared with the lorafleet package) must be beside" in capsys.readouterr().err
    # shipped beside it, as the deploy ships them: found, and part of the inputs hash
    for name in demo.SHARED_FILES:
        shutil.copy(DEMO_FILES[name], alone / name)
    assert module.find_lora(alone / SCRIPT.name) == alone / "lora.py"
    norm = {"base_name": "a/b", "seed": 0, "format": demo.FORMAT_VERSION}
    before = module.inputs_hash(alone / SCRIPT.name, norm)
    assert before == demo.inputs_hash(SCRIPT, norm), "the same files give the same hash wherever they are"
    (alone / "lora.py").write_text(DEMO_TRAINER.read_text() + "\n# changed\n")
    assert module.inputs_hash(alone / SCRIPT.name, norm) != before, "a change of the training code rebuilds"
    for name in [*demo.BUILDER_PARTS, "functiongemma.py"]:  # and so does a change of any part of the builder
        changed = module.inputs_hash(alone / SCRIPT.name, norm)
        (alone / name).write_text((alone / name).read_text() + "\n# changed\n")
        assert module.inputs_hash(alone / SCRIPT.name, norm) != changed, name
