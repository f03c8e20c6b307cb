"""The router's configuration: HAProxy, generated from the fleet (why HAProxy: docs/fleet/router-choice.md).

One frontend takes every request. It answers `/health` (no key) and `/v1/models` itself, checks the
user's key against its SHA-256 (the file never holds that key), reads `model` from the JSON body and
hands the request to that model's backend. A model's backend picks one of the healthy boxes serving
it at random by weight (its home box `router_home_weight` to 1, so prefix caches and LoRA slots stay
warm) and, when a box refuses the connection or answers 404, 502, 503 or 504 before any byte, retries
once or twice on another box.

Each box sits behind its own internal proxy (`listen box_<name>`, reached over an abstract socket)
that sets that box's key and checks its `/health`; the model backends track those checks. The hop
exists because HAProxy sets request headers before it picks a server: a key per box needs a proxy per
box. The drained boxes of a rolling change are simply left out, and the router reloads.
"""

from __future__ import annotations

import base64
import hashlib
import json

from lorafleet.deploy.fleet import Fleet, slug

# HAProxy must hold a whole request to read its `model`: requests up to this size are routed, larger
# ones get a 413 that says so (a FunctionGemma prompt of its whole 32K-token context is about 128 KB).
BUFFER_BYTES = 262_144
MAX_REQUEST_BYTES = 229_376  # the buffer less room for headers and HAProxy's rewrites
TIMEOUT = "10m"  # a request's longest answer (streams included); also how long a reload lets old streams run
BOX_HEADER = "x-lorafleet-box"  # names the box that answered: for the operator and the tests
# A box that refuses, resets, or answers these before any byte reached the client: try another box.
RETRY_ON = "conn-failure empty-response junk-response 404 502 503 504"
_ID = "@CONFIG_ID@"  # in /health's answer: the id of the configuration the running router serves


def _error(status: int, message: str, kind: str, code: str, directive: str = "http-request return") -> str:
    """An OpenAI-style JSON error as HAProxy answers it (`directive`: a rule's return, or `http-error`)."""
    assert "'" not in message, "the body is single-quoted in the configuration"
    body = json.dumps({"error": {"message": message, "type": kind, "code": code}}, separators=(",", ":"))
    return f"{directive} status {status} content-type application/json string '{body}'"


def _key_check(key: str) -> str:
    """The ACL a request passes with the user's key: compared by digest, so the file does not hold the key."""
    digest = hashlib.sha256(f"Bearer {key}".encode()).hexdigest().upper()  # HAProxy's `hex` is upper case
    return f"{{ req.fhdr(authorization),sha2(256),hex -m str {digest} }}"


def _set_box_key(key: str) -> str:
    """The box's key as its requests carry it. Base64 in the file: any character a key may hold is then
    one safe token, with no quoting, `%` or `$` for HAProxy to interpret."""
    if not key:  # the box serves without a key: it must not receive the user's
        return "http-request del-header authorization"
    encoded = base64.b64encode(f"Bearer {key}".encode()).decode()
    return f"http-request set-header authorization %[str({encoded}),b64dec]"


def _address(box_url: str) -> str:
    return box_url.removeprefix("http://").removesuffix("/v1")


def body(fleet: Fleet, drained: frozenset[str] = frozenset()) -> list[str]:
    """The configuration's lines, less its header (which carries the id of these lines)."""
    s = fleet.router_settings
    boxes = [b for b in fleet.boxes if b.name not in drained]
    listed = [m for m in fleet.models if any(b.name not in drained for b in fleet.serving(m))]
    models = json.dumps({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "lorafleet"} for m in listed]},
                        separators=(",", ":"))
    lines = [
        "global",
        "    maxconn 8192",
        f"    tune.bufsize {BUFFER_BYTES}",
        f"    hard-stop-after {TIMEOUT}",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        f"    timeout client {TIMEOUT}",
        f"    timeout server {TIMEOUT}",
        "    timeout http-request 60s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 60s",
        # HAProxy's own 503 (no box serving the model is up) in the API's shape, not an HTML page.
        "    " + _error(503, "no box serving this model is up (lorafleet status --fleet)", "server_error",
                        "no_box_available", directive="http-error"),
        "",
        "frontend fleet",
        f"    bind :{s.router_port}",
        "    option http-buffer-request",
        f"    http-request return status 200 content-type application/json string '{{\"status\":\"ok\",\"config\":\"{_ID}\"}}' "
        "if { path /health }",
        "    " + _error(401, "a wrong or missing API key: the router takes the fleet key (Authorization: Bearer ...)", "invalid_request_error",
                        "invalid_api_key") + f" unless {_key_check(s.secrets.api_key)}",
        f"    http-request return status 200 content-type application/json string '{models}' if {{ path /v1/models }}",
        "    " + _error(413, f"the router routes requests of at most {MAX_REQUEST_BYTES} bytes", "invalid_request_error",
                        "request_too_large") + f" if {{ req.body_size gt {MAX_REQUEST_BYTES} }}",
        "    http-request set-var(txn.model) req.body,json_query('$.model')",
    ]
    lines += [f"    use_backend model_{i} if {{ var(txn.model) -m str {m} }}" for i, m in enumerate(fleet.models)]
    lines += [
        "    default_backend unknown_model",
        "",
        "backend unknown_model",
        "    " + _error(404, "the fleet serves no such model (GET /v1/models lists them)", "invalid_request_error",
                        "model_not_found"),
    ]
    for i, model in enumerate(fleet.models):
        home = fleet.home(model)
        lines += ["", f"backend model_{i}  # {model}", "    balance random(1)  # by weight alone: a model keeps to its home box",
                  "    option redispatch 1", "    retries 2", f"    retry-on {RETRY_ON}"]
        lines += [f"    server {slug(b.name)} abns@lorafleet-box-{slug(b.name)} weight "
                  f"{s.router_home_weight if b.name == home else 1} track box_{slug(b.name)}/vllm"
                  for b in fleet.serving(model) if b.name not in drained]
    for box in boxes:
        lines += [
            "", f"listen box_{slug(box.name)}  # {box.name}: {box.url}",
            f"    bind abns@lorafleet-box-{slug(box.name)}",
            "    retries 0  # the model backend retries on another box",
            f"    {_set_box_key(box.settings.secrets.api_key)}",
            f"    http-response set-header {BOX_HEADER} {slug(box.name)}",
            "    option httpchk GET /health",
            "    http-check expect status 200",
            f"    server vllm {_address(box.url)} check inter {s.router_health_check_seconds}s fall 2 rise 1",
        ]
    return lines


def render(fleet: Fleet, drained: frozenset[str] = frozenset()) -> str:
    """The configuration, with its id: what `/health` reports once the router serves it."""
    lines = body(fleet, drained)
    config_id = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    lines = [line.replace(_ID, config_id) for line in lines]
    header = [
        "# Written by lorafleet from the inventory (0600: it holds the boxes' keys). Edit the inventory, not this",
        "# file: every deploy rewrites it, and the router reloads it (SIGUSR2) with no restart.",
        f"# lorafleet-router-config {config_id}",
    ]
    return "\n".join(header + lines) + "\n"
