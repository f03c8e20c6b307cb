"""files/serving/sync_adapters.py, run as the deploy runs it, against a stand-in of vLLM's admin API.

The script is the shipped one, run as a subprocess with the environment it finds in the vLLM
container (LORAFLEET_MANIFEST, LORAFLEET_PORT, VLLM_API_KEY) plus LORAFLEET_APPLIED, so its record
of applied versions goes to a temporary file. The stand-in answers /v1/models,
/v1/load_lora_adapter and /v1/unload_lora_adapter as vLLM 0.32.0 (the CPU serving image) does;
each behaviour names the vLLM file and function it is copied from (paths under
site-packages/vllm/).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lorafleet.deploy.layout import FILES_DIR
from tests.support.modules import load_file

SCRIPT = FILES_DIR / "serving" / "sync_adapters.py"
BASE = "functiongemma-demo"
BASE_PATH = "/models/functiongemma-demo"
KEY = "sk-the-api-key"


def starlette_json(content: Any, status: int = 200) -> web.Response:
    """A body as starlette's JSONResponse renders it (compact separators), which every vLLM route below uses."""
    return web.Response(body=json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode(),
                        status=status, content_type="application/json")


def error(message: str, err_type: str, code: int) -> web.Response:
    """entrypoints/serve/exception_handling/error_response.py:create_error_response: ErrorResponse{error: ErrorInfo}
    (entrypoints/serve/engine/protocol.py), sent with status error.code by the lora routes
    (entrypoints/serve/lora/api_router.py:_attach_router)."""
    return starlette_json({"error": {"message": message, "type": err_type, "param": None, "code": code}}, code)


@dataclass
class Seen:
    """One request as the stand-in received it, and what it answered."""

    method: str
    path: str
    authorization: str | None
    content_type: str | None
    body: dict | None
    status: int
    answer: str


@dataclass
class VllmAdmin:
    """vLLM 0.32's adapter routes, with its state: the served base model and the loaded adapters."""

    api_key: str | None = KEY
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path, as OpenAIServingModels.lora_requests
    # Listed by /v1/models and gone by the time an unload comes (another unload won the race).
    vanishing: set[str] = field(default_factory=set)
    models_status: int = 200  # anything else: /v1/models answers this with a vLLM error body
    models_error: str = "engine is dead"
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    # ------------------------------------------------------------- the routes

    def models(self) -> web.Response:
        """entrypoints/openai/models/api_router.py:show_available_models, built by
        entrypoints/openai/models/serving.py:OpenAIServingModels.show_available_models: the base model's
        card first (OpenAIModelRegistry.show_available_models: root = its path, max_model_len, no parent),
        then one card per loaded adapter: id = lora_name, root = lora_path, parent = the base model's name."""
        if self.models_status != 200:
            return error(self.models_error, "InternalServerError", self.models_status)
        now = int(time.time())

        def card(**fields):  # entrypoints/serve/engine/protocol.py:ModelCard
            return {"object": "model", "created": now, "owned_by": "vllm", "root": None, "parent": None,
                    "max_model_len": None, "permission": [{"id": "modelperm-0", "object": "model_permission"}],
                    **fields}

        data = [card(id=BASE, root=BASE_PATH, max_model_len=32768)]
        data += [card(id=name, root=path, parent=BASE) for name, path in self.adapters.items()]
        data += [card(id=name, root=f"/adapters/{name}", parent=BASE) for name in sorted(self.vanishing)]
        return starlette_json({"object": "list", "data": data})

    def load(self, body: dict) -> web.Response:
        """entrypoints/openai/models/serving.py:OpenAIServingModels.load_lora_adapter with
        _check_load_lora_adapter_request."""
        name, path, inplace = body.get("lora_name"), body.get("lora_path"), body.get("load_inplace", False)
        if not name or not path:
            return error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        if name == BASE:
            return error(f"The lora adapter '{name}' conflicts with a served base model.", "InvalidUserInput", 400)
        if not inplace and name in self.adapters:
            return error(f"The lora adapter '{name}' has already been loaded. If you want to load the adapter in "
                         "place, set 'load_inplace' to True.", "InvalidUserInput", 400)
        # engine_client.add_lora fails with vllm/exceptions.py:LoRAAdapterNotFoundError when the path holds no
        # adapter; load_lora_adapter turns it into a 404 (create_error_response's VLLMNotFoundError branch).
        if not (Path(path) / "adapter_config.json").is_file():
            return error(f"Loading lora {name} failed: No adapter found for {path}", "NotFoundError", 404)
        self.adapters[name] = path
        # api_router.py:load_lora_adapter: Response(status_code=200, content=<the handler's string>), no JSON
        return web.Response(body=f"Success: LoRA adapter '{name}' added successfully.".encode())

    def unload(self, body: dict) -> web.Response:
        """entrypoints/openai/models/serving.py:OpenAIServingModels.unload_lora_adapter with
        _check_unload_lora_adapter_request."""
        name = body.get("lora_name")
        if not name:
            return error("'lora_name' needs to be provided to unload a LoRA adapter.", "InvalidUserInput", 400)
        self.vanishing.discard(name)
        if name not in self.adapters:
            return error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.adapters[name]
        return web.Response(body=f"Success: LoRA adapter '{name}' removed successfully.".encode())

    # ------------------------------------------------------------- http

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            raw = await request.read()
            body = json.loads(raw) if raw else None
            response = self.answer(request, body)
            self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization"),
                                  request.headers.get("Content-Type"), body, response.status,
                                  response.body.decode() if response.body else ""))
            return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    def answer(self, request: web.Request, body: dict | None) -> web.Response:
        # entrypoints/serve/middleware/authenticate.py:AuthenticationMiddleware: /v1 needs "Bearer <key>"
        # (scheme case-insensitive), else 401 {"error": "Unauthorized"}; no key configured, no check.
        if self.api_key and request.method != "OPTIONS" and request.path.startswith("/v1"):
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or token != self.api_key:
                return starlette_json({"error": "Unauthorized"}, 401)
        route = (request.method, request.path)
        if route == ("GET", "/v1/models"):
            return self.models()
        if route in (("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter")):
            # entrypoints/serve/utils/api_utils.py:validate_json_request, answered by
            # exception_handling/handlers/validation.py:validation_exception_handler (400, type "Bad Request")
            if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
                return error("1 validation error:\n  Unsupported Media Type: Only 'application/json' is allowed",
                             "Bad Request", 400)
            body = body or {}
            return self.load(body) if request.path.endswith("/load_lora_adapter") else self.unload(body)
        return starlette_json({"detail": "Not Found"}, 404)  # FastAPI's answer for a route it lacks


@pytest.fixture
def vllm():
    """The stand-in on 127.0.0.1, a free port, in a thread of its own."""
    admin = VllmAdmin()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(admin.app(), access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        admin.port = runner.addresses[0][1]

    thread = threading.Thread(target=loop.run_forever, name="vllm-admin-stand-in", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    yield admin
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


@dataclass
class Box:
    """The container's files: the manifest, the adapters' folders, the record of applied versions."""

    root: Path
    manifest: Path
    applied: Path

    def adapter(self, name: str, version: str | None = "v1", present: bool = True) -> dict:
        """A manifest entry; `present`: its folder holds an adapter vLLM can load."""
        path = self.root / "adapters" / name
        if present:
            path.mkdir(parents=True, exist_ok=True)
            (path / "adapter_config.json").write_text("{}")
        entry = {"name": name, "path": str(path)}
        if version is not None:
            entry["version"] = version
        return entry

    def declare(self, *adapters: dict, base_model: str | None = BASE) -> None:
        manifest: dict[str, Any] = {"adapters": list(adapters)}
        if base_model is not None:
            manifest["base_model"] = base_model
        self.manifest.write_text(json.dumps(manifest))

    def record(self, **versions: str) -> None:
        self.applied.write_text(json.dumps(versions))

    def recorded(self) -> dict:
        return json.loads(self.applied.read_text())


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(root=tmp_path, manifest=tmp_path / "adapters.json", applied=tmp_path / "applied.json")


def sync(vllm: VllmAdmin, box: Box, *args: str, key: str | None = KEY) -> subprocess.CompletedProcess:
    """The script as `docker exec <vllm> python3 /lorafleet/sync_adapters.py [args]` runs it."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LORAFLEET_MANIFEST": str(box.manifest),
           "LORAFLEET_PORT": str(vllm.port), "LORAFLEET_APPLIED": str(box.applied)}
    if key is not None:
        env["VLLM_API_KEY"] = key
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)


def loaded(vllm: VllmAdmin, box: Box, *names: str) -> None:
    """As if vLLM had started with these adapters (entrypoint.py's --lora-modules)."""
    for name in names:
        vllm.adapters[name] = str(box.root / "adapters" / name)


# ------------------------------------------------------------------ sync


def test_missing_adapters_are_loaded_and_their_versions_recorded(vllm, box):
    box.declare(box.adapter("weather", "w1"), box.adapter("sql", None))
    result = sync(vllm, box)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["loaded sql", "loaded weather"]  # in name order
    assert [(s.path, s.body) for s in vllm.posts()] == [
        ("/v1/load_lora_adapter", {"lora_name": n, "lora_path": str(box.root / "adapters" / n), "load_inplace": False})
        for n in ("sql", "weather")]
    assert all(s.status == 200 for s in vllm.posts())
    assert vllm.adapters == {n: str(box.root / "adapters" / n) for n in ("sql", "weather")}
    assert box.recorded() == {"sql": "", "weather": "w1"}  # no version: recorded as ""
    assert result.stderr == ""


def test_a_changed_version_is_reloaded_in_place(vllm, box):
    box.declare(box.adapter("weather", "w2"), box.adapter("sql", "s1"))
    loaded(vllm, box, "weather", "sql")
    box.record(weather="w1", sql="s1")
    result = sync(vllm, box)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["reloaded weather"]
    [post] = vllm.posts()
    assert post.body == {"lora_name": "weather", "lora_path": str(box.root / "adapters" / "weather"),
                         "load_inplace": True}
    assert post.status == 200
    assert box.recorded() == {"weather": "w2", "sql": "s1"}


@pytest.mark.parametrize("version", ["w1", None])
def test_an_adapter_served_but_never_recorded_is_reloaded_in_place(vllm, box, version):
    box.declare(box.adapter("weather", version))
    loaded(vllm, box, "weather")
    result = sync(vllm, box)  # no record of applied versions at all
    assert result.returncode == 0 and result.stdout.splitlines() == ["reloaded weather"]
    assert [p.body["load_inplace"] for p in vllm.posts()] == [True]
    assert box.recorded() == {"weather": version or ""}


def test_unchanged_adapters_are_left_alone(vllm, box):
    box.declare(box.adapter("weather", "w1"), box.adapter("sql", None))
    loaded(vllm, box, "weather", "sql")
    box.record(weather="w1", sql="")
    result = sync(vllm, box)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert vllm.posts() == []
    assert [s.path for s in vllm.seen] == ["/v1/models"]
    assert box.recorded() == {"weather": "w1", "sql": ""}


def test_adapters_not_in_the_manifest_are_unloaded_and_forgotten(vllm, box):
    box.declare(box.adapter("weather", "w1"))
    loaded(vllm, box, "weather", "old", "older")
    box.record(weather="w1", old="o1", older="o2")
    result = sync(vllm, box)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["unloaded old", "unloaded older"]
    assert [(s.path, s.body, s.status) for s in vllm.posts()] == [
        ("/v1/unload_lora_adapter", {"lora_name": "old"}, 200),
        ("/v1/unload_lora_adapter", {"lora_name": "older"}, 200)]
    assert vllm.adapters == {"weather": str(box.root / "adapters" / "weather")}
    assert box.recorded() == {"weather": "w1"}


def test_the_base_model_is_never_unloaded(vllm, box):
    box.declare()
    result = sync(vllm, box)
    assert result.returncode == 0 and vllm.posts() == []
    assert box.recorded() == {}


def test_a_missing_manifest_means_no_adapters(vllm, box):
    loaded(vllm, box, "weather")
    box.record(weather="w1")
    result = sync(vllm, box)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["unloaded weather"]
    assert vllm.adapters == {} and box.recorded() == {}


def test_failures_are_reported_on_stderr_and_exit_1_while_the_others_still_sync(vllm, box):
    box.declare(box.adapter("aaa-broken", "1", present=False), box.adapter("weather", "w2"),
                box.adapter("sql", "s2", present=False), box.adapter("zzz-new", "z1"))
    loaded(vllm, box, "weather", "sql", "gone")
    vllm.vanishing = {"raced"}
    box.record(weather="w1", sql="s1", gone="g1", raced="r1")
    result = sync(vllm, box)
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["reloaded weather", "loaded zzz-new", "unloaded gone"]
    answers = {(s.body["lora_name"], s.path.removeprefix("/v1/")): s.answer for s in vllm.posts()}
    assert result.stderr.splitlines() == [
        f"lorafleet: load aaa-broken: HTTP 404: {answers['aaa-broken', 'load_lora_adapter'][:300]}",
        f"lorafleet: load sql: HTTP 404: {answers['sql', 'load_lora_adapter'][:300]}",
        f"lorafleet: unload raced: HTTP 404: {answers['raced', 'unload_lora_adapter'][:300]}"]
    assert "No adapter found for" in result.stderr and "'raced' cannot be found" in result.stderr
    # A failed load keeps its old record (the next sync tries again); a failed unload keeps its record too.
    assert box.recorded() == {"weather": "w2", "sql": "s1", "zzz-new": "z1", "raced": "r1"}


def test_a_long_error_body_is_cut_to_300_characters(vllm, box):
    deep = "d" * 400
    box.declare(box.adapter(deep, "1", present=False))
    result = sync(vllm, box)
    [post] = vllm.posts()
    assert len(post.answer) > 300
    assert result.stderr == f"lorafleet: load {deep}: HTTP 404: {post.answer[:300]}\n"


def test_a_failing_models_list_stops_the_sync_with_its_answer(vllm, box):
    box.declare(box.adapter("weather"))
    vllm.models_status, vllm.models_error = 500, "EngineDeadError: " + "traceback " * 40
    result = sync(vllm, box)
    assert result.returncode == 1 and result.stdout == ""
    answer = vllm.seen[0].answer
    assert len(answer) > 300
    assert result.stderr == f"lorafleet: GET /v1/models answered 500: {answer[:300]}\n"
    assert vllm.posts() == [] and not box.applied.exists()


# ------------------------------------------------------------------ the API key


def test_every_request_carries_the_api_key(vllm, box):
    box.declare(box.adapter("weather"))
    loaded(vllm, box, "old")
    assert sync(vllm, box).returncode == 0
    assert len(vllm.seen) == 3
    assert {s.authorization for s in vllm.seen} == {f"Bearer {KEY}"}
    assert {s.content_type for s in vllm.seen} == {"application/json"}


@pytest.mark.parametrize("key", [None, ""])
def test_no_api_key_no_authorization_header(vllm, box, key):
    vllm.api_key = None  # vLLM started without --api-key
    box.declare(box.adapter("weather"))
    assert sync(vllm, box, key=key).returncode == 0
    assert len(vllm.seen) == 2 and all(s.authorization is None for s in vllm.seen)


@pytest.mark.parametrize("args", [(), ("--served",), ("--verify",)])
def test_a_wrong_key_is_refused_with_vllms_401(vllm, box, args):
    box.declare(box.adapter("weather"))
    result = sync(vllm, box, *args, key="sk-not-the-key")
    assert result.returncode == 1
    assert result.stderr == 'lorafleet: GET /v1/models answered 401: {"error":"Unauthorized"}\n'
    assert vllm.posts() == [] and not box.applied.exists()


# ------------------------------------------------------------------ --served


def test_served_prints_the_adapters_their_parent_and_the_applied_versions(vllm, box):
    loaded(vllm, box, "weather", "sql")
    box.record(weather="w1", sql="s1", gone="g1")
    result = sync(vllm, box, "--served")
    assert result.returncode == 0, result.stderr
    assert result.stdout == json.dumps({"served": {"weather": BASE, "sql": BASE},
                                        "applied": {"weather": "w1", "sql": "s1", "gone": "g1"}}, sort_keys=True) + "\n"
    assert vllm.posts() == [] and box.recorded() == {"weather": "w1", "sql": "s1", "gone": "g1"}


def test_served_without_a_record_says_nothing_was_applied(vllm, box):
    result = sync(vllm, box, "--served")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"served": {}, "applied": {}}
    assert not box.applied.exists()


# ------------------------------------------------------------------ --verify


def test_verify_all_good_names_the_base_model_and_the_adapters(vllm, box):
    box.declare(box.adapter("weather"), box.adapter("sql"))
    loaded(vllm, box, "weather", "sql")
    result = sync(vllm, box, "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"serving {BASE} with 2 adapters: sql, weather\n"
    assert vllm.posts() == [] and not box.applied.exists()


@pytest.mark.parametrize(("declared", "served", "base_model", "missing", "extra", "wrong_parent"), [
    (["weather", "sql"], ["weather"], BASE, ["sql"], [], []),
    (["weather"], ["weather", "old", "alpha"], BASE, [], ["alpha", "old"], []),
    # The manifest names another base model than the one vLLM serves: every adapter has the wrong parent.
    (["weather", "sql"], ["weather", "sql"], "gemma-3-270m", [], [], ["sql", "weather"]),
    (["weather"], ["sql"], "gemma-3-270m", ["weather"], ["sql"], ["sql"]),
])
def test_verify_names_what_differs_and_exits_1(vllm, box, declared, served, base_model, missing, extra, wrong_parent):
    box.declare(*(box.adapter(n) for n in declared), base_model=base_model)
    loaded(vllm, box, *served)
    result = sync(vllm, box, "--verify")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"lorafleet: served adapters differ from the manifest: missing={missing} extra={extra} "
                             f"wrong_parent={wrong_parent}; see `docker logs` of the vLLM container\n")
    assert vllm.posts() == []


def test_verify_without_a_base_model_in_the_manifest_does_not_check_parents(vllm, box):
    box.declare(box.adapter("weather"), base_model=None)
    loaded(vllm, box, "weather")
    result = sync(vllm, box, "--verify")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "serving None with 1 adapters: weather\n"


def test_verify_with_no_manifest_and_nothing_served_is_good(vllm, box):
    result = sync(vllm, box, "--verify")
    assert result.returncode == 0 and result.stdout == "serving None with 0 adapters: \n"


def test_verify_with_no_manifest_calls_every_served_adapter_extra(vllm, box):
    loaded(vllm, box, "weather")
    result = sync(vllm, box, "--verify")
    assert result.returncode == 1 and "missing=[] extra=['weather'] wrong_parent=[]" in result.stderr


# ------------------------------------------------------------------ the script's own settings


def test_the_applied_record_defaults_to_the_file_the_entrypoint_writes(monkeypatch):
    monkeypatch.delenv("LORAFLEET_APPLIED", raising=False)
    monkeypatch.delenv("LORAFLEET_PORT", raising=False)
    sync_module = load_file("lorafleet_sync_adapters", SCRIPT)
    entrypoint = load_file("lorafleet_entrypoint", FILES_DIR / "serving" / "entrypoint.py")
    assert sync_module.APPLIED == entrypoint.APPLIED == "/tmp/lorafleet-applied.json"
    assert sync_module.BASE_URL == "http://127.0.0.1:8000"  # vLLM's port inside its container


def test_the_stand_in_refuses_a_second_load_without_load_inplace_as_vllm_does(vllm, box):
    # The in-place reload is needed: a plain load of a loaded name is vLLM's 400, so the script must not send one.
    box.adapter("weather")
    loaded(vllm, box, "weather")
    path = vllm.adapters["weather"]
    response = vllm.load({"lora_name": "weather", "lora_path": path})
    assert response.status == 400 and b"has already been loaded" in response.body
    assert vllm.load({"lora_name": "weather", "lora_path": path, "load_inplace": True}).status == 200
