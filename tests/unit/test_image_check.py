"""The image check: the command that runs check_image.py in a throwaway container of a new image, what it is
given, the cpu_image setting that selects a CPU image, and the script's verdicts (with stand-ins for vLLM and
transformers; tests/e2e/test_3b_image_upgrade.py runs it in the real image)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lorafleet.deploy import layout, stack
from lorafleet.deploy.serving import plan as serving_plan
from lorafleet.deploy.settings import Secrets, SettingsError, build_settings

SECRETS = Secrets(hf_token="hf_image_check_token", api_key="image-check-api-key")
ROOT = layout.PROJECT_ROOT
SCRIPT = layout.SERVE_FILES["check_image.py"]


def settings(data: dict, **changes):
    return build_settings({**data, **changes}, SECRETS)


def check_args(command: str) -> tuple[list[str], list[str]]:
    """(docker's arguments, up to the image; the script's arguments)."""
    words = shlex.split(command)
    script = words.index(layout.container_script("check_image.py"))
    return words[:script], words[script + 1:]


# -- the command ------------------------------------------------------------------------------

@pytest.mark.parametrize("group", ["local", "gpu"])
def test_the_check_runs_in_a_throwaway_container_of_the_new_image_changing_nothing(group, local_data, gpu_data):
    s = settings(local_data if group == "local" else gpu_data)
    docker, script = check_args(serving_plan.image_check_command(s))
    image = stack.serving_image(s)
    assert docker[:5] == ["docker", "run", "--rm", "--network", "none"]
    assert docker[-3:] == ["--entrypoint", "python3", image]
    volumes = [docker[i + 1] for i, word in enumerate(docker) if word == "-v"]
    # vLLM's own binds (the serve files where the deploy mounts them), every one read-only.
    assert [v.rsplit(":", 1)[0] for v in volumes] == [v.removesuffix(":ro") for v in serving_plan.volumes(s)]
    assert all(v.endswith(":ro") for v in volumes)
    assert f"{stack.paths(s).serve_dir}:{layout.CONTAINER_SERVE_DIR}:ro" in volumes
    env = dict(docker[i + 1].split("=", 1) for i, word in enumerate(docker) if word == "-e")
    assert env == serving_plan.vllm_environment(s)
    assert ("--gpus" in docker) is (s.profile == "cuda")
    assert script[:4] == ["--image", image, "--model", s.base_model_dir]


def test_no_secret_in_the_check_command(gpu_data):
    command = serving_plan.image_check_command(settings(gpu_data))
    assert SECRETS.api_key not in command and SECRETS.hf_token not in command and "--env-file" not in command


def test_the_check_is_given_every_plugin_vllm_is_given(local_data):
    s = settings(local_data)
    _, script = check_args(serving_plan.image_check_command(s))
    assert script[4:] == ["--tool-parser-plugin", layout.container_script("functiongemma_tool_parser.py"),
                          "--tool-call-parser", layout.PROJECT_TOOL_PARSER,
                          *middleware_args()]


def middleware_args() -> list[str]:
    return [arg for m in layout.MIDDLEWARE for arg in ("--middleware", m)]


def test_a_middleware_and_chat_template_of_the_users_are_checked_too(local_data):
    s = settings(local_data, extra_vllm_args=["--middleware=mine.Middle", "--chat_template", "/var/tmp/lorafleet/models/t.jinja",
                                              "--middleware", "mine.Other", "--seed", "0"])
    assert serving_plan.plugin_args(s)[4:] == [*middleware_args(), "--middleware", "mine.Middle",
                                               "--chat-template", "/var/tmp/lorafleet/models/t.jinja",
                                               "--middleware", "mine.Other"]


def test_vllms_own_parser_is_checked_by_name_and_no_parser_without_tool_calling(gpu_data):
    builtin = serving_plan.plugin_args(settings(gpu_data, tool_call_parser="functiongemma"))
    assert builtin == ["--tool-call-parser", "functiongemma", *middleware_args()]
    assert serving_plan.plugin_args(settings(gpu_data, enable_tool_calling=False)) == middleware_args()


def test_the_check_script_is_shipped_with_the_serve_files_but_restarts_nothing(local_data, monkeypatch, tmp_path):
    assert layout.container_script("check_image.py") == "/lorafleet/check_image.py"
    assert SCRIPT.parent == layout.FILES_DIR / "serving"
    s = settings(local_data)
    before = serving_plan.server_hash(s)
    edited = tmp_path / "check_image.py"
    edited.write_text(SCRIPT.read_text() + "\n# edited\n")
    monkeypatch.setitem(layout.SERVE_FILES, "check_image.py", edited)
    assert serving_plan.server_hash(s) == before, "vLLM never runs it: an edit must not recreate the server"
    monkeypatch.setitem(layout.SERVE_FILES, "adapter_check.py", edited)  # run on hub downloads, never by vLLM
    assert serving_plan.server_hash(s) == before, "an edit of the adapter check must not recreate the server"
    monkeypatch.setitem(layout.SERVE_FILES, "entrypoint.py", edited)
    assert serving_plan.server_hash(s) != before, "a file vLLM runs is part of the server hash"


# -- cpu_image: the setting that selects the CPU profile's image ------------------------------

def test_cpu_image_replaces_the_build_and_changes_the_server(local_data):
    built = settings(local_data)
    mine = settings(local_data, cpu_image="lorafleet/vllm-cpu:0.33.0-mine")
    assert stack.serving_image(built).startswith("lorafleet/vllm-cpu:0.32.0-")
    assert stack.serving_image(mine) == "lorafleet/vllm-cpu:0.33.0-mine"
    assert serving_plan.server_hash(mine) != serving_plan.server_hash(built)
    assert check_args(serving_plan.image_check_command(mine))[0][-1] == "lorafleet/vllm-cpu:0.33.0-mine"


def test_cpu_image_has_no_say_on_the_cuda_profile(gpu_data):
    assert stack.serving_image(settings(gpu_data, cpu_image="lorafleet/vllm-cpu:0.33.0-mine")) == gpu_data["cuda_image"]


@pytest.mark.parametrize("value", ["lorafleet/vllm-cpu:latest", "lorafleet/vllm-cpu", "Not An Image"])
def test_cpu_image_must_be_a_pinned_tag(local_data, value):
    with pytest.raises(SettingsError, match=f"cpu_image={value!r} must name a pinned tag"):
        settings(local_data, cpu_image=value)


# -- the script, with stand-ins for vLLM 0.32's ToolParserManager and transformers' tokenizer ---------

# As vLLM 0.32's registry behaves (vllm/tool_parsers/abstract_tool_parser.py): register_module decorates a
# class under a name, get_tool_parser raises KeyError for a name nobody registered.
FAKE_VLLM = {
    "vllm/__init__.py": "",
    "vllm/tool_parsers/__init__.py": "",
    "vllm/tool_parsers/abstract_tool_parser.py": '''
class ToolParserManager:
    tool_parsers = {}

    @classmethod
    def register_module(cls, name):
        def register(parser):
            cls.tool_parsers[name] = parser
            return parser
        return register

    @classmethod
    def get_tool_parser(cls, name):
        if name in cls.tool_parsers:
            return cls.tool_parsers[name]
        raise KeyError(f"Tool parser '{name}' not found.")
''',
}
# transformers' AutoTokenizer, rendering the folder's chat_template.jinja as transformers compiles it.
FAKE_TRANSFORMERS = {"transformers/__init__.py": f'''
import sys
sys.path.insert(0, {str(ROOT)!r})
from tests.support.chat_templates import BOS, compile_template


class _Tokenizer:
    def __init__(self, template):
        self.template = template

    def apply_chat_template(self, messages, tools=None, tokenize=True, add_generation_prompt=False, chat_template=None):
        source = chat_template or self.template
        return compile_template(source).render(messages=messages, tools=tools, bos_token=BOS,
                                               add_generation_prompt=add_generation_prompt)


class AutoTokenizer:
    @staticmethod
    def from_pretrained(path):
        with open(path + "/chat_template.jinja", encoding="utf-8") as f:
            return _Tokenizer(f.read())
'''}
REGISTERING_PLUGIN = '''
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

@ToolParserManager.register_module("lorafleet_functiongemma")
class Parser:
    pass
'''
MIDDLEWARE = '''
class ToolResultNames:
    def __init__(self, app):
        self.app = app
'''


@pytest.fixture
def box(tmp_path):
    """A serve folder as /lorafleet holds it, a model folder with the demo template, and the stand-ins."""
    serve, model, site = tmp_path / "lorafleet", tmp_path / "model", tmp_path / "site"
    for folder in (serve, model, site):
        folder.mkdir()
    (serve / "check_image.py").write_text(SCRIPT.read_text())
    (serve / "plugin.py").write_text(REGISTERING_PLUGIN)
    (serve / "lorafleet_middleware.py").write_text(MIDDLEWARE)
    (model / "chat_template.jinja").write_text((layout.FILES_DIR / "models" / "chat_template.jinja").read_text())
    for name, text in {**FAKE_VLLM, **FAKE_TRANSFORMERS}.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    return tmp_path


def run_check(box: Path, *args: str, plugin: str = "plugin.py") -> subprocess.CompletedProcess:
    serve = box / "lorafleet"
    argv = [sys.executable, str(serve / "check_image.py"), "--image", "vllm/vllm-openai:v9.9.9", "--model", str(box / "model"),
            "--tool-parser-plugin", str(serve / plugin), "--tool-call-parser", "lorafleet_functiongemma",
            "--middleware", "lorafleet_middleware.ToolResultNames", *args]
    env = {**os.environ, "PYTHONPATH": str(box / "site")}
    return subprocess.run(argv, cwd=box, env=env, capture_output=True, text=True, timeout=60)


def test_the_check_passes_when_every_plugin_imports_and_the_template_renders(box):
    done = run_check(box)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: tool parser plugin" in done.stdout and "registers lorafleet_functiongemma" in done.stdout
    assert "ok: middleware lorafleet_middleware.ToolResultNames" in done.stdout
    assert "renders a tool declaration, a call and a named result" in done.stdout


def test_a_plugin_whose_vllm_module_moved_is_named_with_its_error_line_and_the_image(box):
    # The real plugin against a vLLM without the modules it imports: what a release that moved them looks like.
    (box / "lorafleet" / "functiongemma_tool_parser.py").write_text(layout.SERVE_FILES["functiongemma_tool_parser.py"].read_text())
    done = run_check(box, plugin="functiongemma_tool_parser.py")
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if "FAILED" in line]
    assert len(failed) == 1, done.stdout
    assert "FAILED in vllm/vllm-openai:v9.9.9: tool parser plugin" in failed[0]
    assert "functiongemma_tool_parser.py: does not import: ModuleNotFoundError: No module named 'vllm." in failed[0]
    assert "of functiongemma_tool_parser.py: from vllm." in failed[0], "the plugin's line that failed"
    # The other checks still ran, and the last line says what was (not) done and the fix.
    assert "ok: middleware" in done.stdout and "ok: chat template" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("lorafleet: the image vllm/vllm-openai:v9.9.9 cannot serve")
    assert "The running server was not touched" in done.stdout


def test_a_plugin_that_imports_but_registers_another_name_is_refused(box):
    (box / "lorafleet" / "plugin.py").write_text(REGISTERING_PLUGIN.replace('"lorafleet_functiongemma"', '"other"'))
    done = run_check(box)
    assert done.returncode == 1
    assert "no tool parser 'lorafleet_functiongemma' is registered with vLLM's ToolParserManager" in done.stdout


def test_a_vllm_without_the_registry_is_named(box):
    (box / "site" / "vllm" / "tool_parsers" / "abstract_tool_parser.py").unlink()
    (box / "lorafleet" / "plugin.py").write_text("")
    done = run_check(box)
    assert done.returncode == 1
    assert "vLLM's ToolParserManager is not in vllm.tool_parsers.abstract_tool_parser: ModuleNotFoundError" in done.stdout


@pytest.mark.parametrize("middleware, message", [
    ("", "middleware lorafleet_middleware.ToolResultNames: does not import: AttributeError"),
    ("import vllm.entrypoints.moved\n", "does not import: ModuleNotFoundError: No module named 'vllm.entrypoints' "
                                        "(line 1 of lorafleet_middleware.py: import vllm.entrypoints.moved)"),
    ("ToolResultNames = 3\n", "is neither a class nor a coroutine function"),
    ("class ToolResultNames:\n    def __init__(self):\n        pass\n", "does not build around an app: TypeError"),
])
def test_a_middleware_that_vllm_could_not_add_is_refused(box, middleware, message):
    (box / "lorafleet" / "lorafleet_middleware.py").write_text(middleware)
    done = run_check(box)
    assert done.returncode == 1 and message in done.stdout, done.stdout


def test_a_chat_template_that_refuses_a_tool_conversation_is_refused(box):
    (box / "model" / "chat_template.jinja").write_text("{{ raise_exception('no tools here') }}")
    done = run_check(box)
    assert done.returncode == 1
    assert "chat template of" in done.stdout and "does not render a tool conversation: TemplateError: no tools here" in done.stdout


def test_a_chat_template_that_drops_the_tool_result_is_refused(box):
    (box / "model" / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}{% endfor %}get_weather")
    done = run_check(box)
    assert done.returncode == 1 and "renders a tool conversation without the tool result" in done.stdout


def test_a_chat_template_of_the_users_is_the_one_rendered(box):
    (box / "mine.jinja").write_text("{{ raise_exception('mine') }}")
    done = run_check(box, "--chat-template", str(box / "mine.jinja"))
    assert done.returncode == 1 and "TemplateError: mine" in done.stdout
