"""The benchmark: statistics, model selection, comparison, and real runs against the fake server."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lorafleet.tools.bench import prompts
from lorafleet.tools.bench.load import BenchConfig
from lorafleet.tools.bench.prompts import resolve_models
from lorafleet.tools.bench.report import SCHEMA, compare_rows, render_compare, render_result, write_chart, write_json
from lorafleet.tools.bench.run import run_bench
from lorafleet.tools.bench.stats import Sample, percentile, ratio, summarize
from lorafleet.tools.cli import main as cli_main
from lorafleet.tools.endpoint import resolve_endpoint
from tests.support.fake_server import FakeConfig, running_fake_server

LISTED = [
    {"id": "fg", "parent": None},
    {"id": "weather", "parent": "fg"},
    {"id": "sql", "parent": "fg"},
    {"id": "cal", "parent": "fg"},
]


# ------------------------------------------------------------ percentiles


def test_percentile_linear_interpolation() -> None:
    data = [1, 2, 3, 4]
    assert percentile(data, 0) == 1
    assert percentile(data, 100) == 4
    assert percentile(data, 50) == 2.5
    assert percentile(data, 90) == pytest.approx(3.7)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([3, 1, 2], 50) == 2  # unsorted input
    assert percentile([1.0, float("nan"), 3.0], 50) == 2.0


def test_percentile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    import random

    rng = random.Random(1)
    data = [rng.expovariate(0.1) for _ in range(997)]
    for q in (50, 90, 99, 99.9):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))


def test_summarize_counts_errors_by_kind_and_rates() -> None:
    samples = [
        Sample("a", 0, True, e2e_ms=100, ttft_ms=10, output_tokens=5),
        Sample("a", 1, True, e2e_ms=300, ttft_ms=30, output_tokens=7),
        Sample("a", 2, False, e2e_ms=5, error="http_500"),
        Sample("a", 3, False, e2e_ms=5, error="http_500"),
        Sample("a", 4, False, e2e_ms=9, error="timeout"),
    ]
    s = summarize(samples, wall_s=2.0)
    assert (s["requests"], s["ok"], s["error_count"]) == (5, 2, 3)
    assert s["errors"] == {"http_500": 2, "timeout": 1}
    assert s["req_per_s"] == 1.0
    assert s["output_tok_per_s"] == 6.0
    assert s["ttft_ms"]["p50"] == 20 and s["e2e_ms"]["p50"] == 200
    assert s["e2e_ms"]["mean"] == 200  # failed requests do not enter latencies


# ------------------------------------------------------------ model selection


@pytest.mark.parametrize(
    ("models", "adapters", "want"),
    [
        (None, None, ["fg", "weather", "sql", "cal"]),
        ("base", None, ["fg"]),
        ("base,weather,sql", None, ["fg", "weather", "sql"]),
        (None, "all", ["weather", "sql", "cal"]),
        (None, "2", ["weather", "sql"]),
        ("adapters:1", None, ["weather"]),
        ("base", "cal", ["fg", "cal"]),
        ("all,weather", None, ["fg", "weather", "sql", "cal"]),
    ],
)
def test_resolve_models(models: str | None, adapters: str | None, want: list[str]) -> None:
    assert resolve_models(models, adapters, LISTED) == want


@pytest.mark.parametrize(("models", "adapters"), [("nope", None), (None, "fg"), (None, "9"), ("adapters:9", None)])
def test_resolve_models_rejects_unknown(models: str | None, adapters: str | None) -> None:
    with pytest.raises(ValueError):
        resolve_models(models, adapters, LISTED)


def test_config_refuses_unbounded_runs() -> None:
    with pytest.raises(ValueError, match="--requests"):
        BenchConfig(models=["m"], requests=None, duration=None).check()
    with pytest.raises(ValueError):
        BenchConfig(models=["m"], concurrency=0).check()


# ------------------------------------------------------------ compare


def _result(req_per_s: float, p50: float, errors: int = 0) -> dict:
    stats = {"req_per_s": req_per_s, "output_tok_per_s": req_per_s * 10, "error_count": errors,
             "requests": 10, "ttft_ms": {"p50": p50 / 2, "p90": p50, "p99": p50 * 2},
             "e2e_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3}}
    return {"schema": SCHEMA, "label": "", "wall_s": 1.0,
            "config": {"models": ["m"], "rate": None, "concurrency": 4},
            "overall": stats, "per_model": {"m": stats}, "server": {}}


def test_ratio() -> None:
    assert ratio(2.0, 3.0) == 1.5
    assert ratio(0, 3.0) is None
    assert ratio(None, 3.0) is None
    assert ratio(2.0, None) is None


def test_compare_rows_and_render() -> None:
    a, b = _result(10.0, 100.0), _result(20.0, 50.0, errors=1)
    b["per_model"] = {"other": b["overall"]}
    rows = {(m, metric): (va, vb, r) for m, metric, va, vb, r in compare_rows(a, b)}
    assert rows[("ALL", "req/s")] == (10.0, 20.0, 2.0)
    assert rows[("ALL", "E2E p50 ms")][2] == 0.5
    assert rows[("ALL", "errors")] == (0, 1, None)
    assert ("m", "req/s") not in rows and ("other", "req/s") not in rows  # per model only when in both
    text = render_compare(a, b)
    assert "2.00x" in text and "0.50x" in text
    assert "only in A: m" in text and "only in B: other" in text
    same = compare_rows(a, _result(5.0, 100.0))
    assert ("m", "req/s", 10.0, 5.0, 0.5) in same


# ------------------------------------------------------------ runs against the fake server


def test_bench_against_fake_server_writes_json_and_png(tmp_path: Path) -> None:
    with running_fake_server(FakeConfig(adapters=["weather", "sql"], tokens=6)) as url:
        endpoint = resolve_endpoint(url=url, env={})
        cfg = BenchConfig(models=["fake-functiongemma", "weather", "sql"], concurrency=8, requests=30,
                          max_tokens=16, progress=False, label="unit")
        result = run_bench(endpoint, cfg)
    assert result["overall"]["requests"] == 30
    assert result["overall"]["ok"] == 30
    assert set(result["per_model"]) == {"fake-functiongemma", "weather", "sql"}
    assert all(s["requests"] == 10 for s in result["per_model"].values())
    assert result["overall"]["ttft_ms"]["p50"] is not None
    assert result["overall"]["output_tokens"] > 0
    # The shared developer turn is what the (fake) prefix cache counts as hits.
    assert result["server"]["prefix_cache_hit_rate"] > 0.5
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    write_json(result, out)
    write_chart(result, chart)
    assert json.loads(out.read_text())["schema"] == SCHEMA
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    assert "weather" in render_result(result)


def test_bench_counts_errors_by_kind_and_falls_back_without_tool_parser() -> None:
    config = FakeConfig(adapters=["weather", "broken"], broken={"broken"}, tool_parser=False)
    with running_fake_server(config) as url:
        cfg = BenchConfig(models=["weather", "broken"], concurrency=4, requests=10, progress=False)
        result = run_bench(resolve_endpoint(url=url, env={}), cfg)
    assert result["per_model"]["broken"]["errors"] == {"http_500": 5}
    assert result["per_model"]["weather"]["ok"] == 5
    assert result["config"]["tools_declared"] is False
    assert any("tool-call parser" in n for n in result["notes"])


def test_rate_mode_is_bounded_by_duration() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"])) as url:
        cfg = BenchConfig(models=["weather"], rate=50.0, concurrency=16, requests=None, duration=1.0,
                          progress=False, seed=3)
        started = time.monotonic()
        result = run_bench(resolve_endpoint(url=url, env={}), cfg)
        elapsed = time.monotonic() - started
    assert elapsed < 10
    # Poisson arrivals at 50/s for 1 s: about 50, surely between 20 and 100.
    assert 20 <= result["overall"]["requests"] <= 100
    assert result["overall"]["error_count"] == 0


def test_cli_bench_versus_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_fake_server(FakeConfig(adapters=["w1", "w2", "w3"], api_key="key-1")) as url:
        rc = cli_main(["bench", "--url", url + "/v1", "--api-key", "key-1", "--models", "base", "--versus", "adapters",
                       "--requests", "12", "--concurrency", "4", "--no-progress",
                       "--out", str(tmp_path / "run.json"), "--chart", str(tmp_path / "run.png")])
    assert rc == 0
    for name in ("run-a.json", "run-b.json", "run-a.png", "run-b.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    printed = capsys.readouterr().out
    assert "B/A" in printed and "w3" in printed and "key-1" not in printed
    assert cli_main(["bench", "compare", str(tmp_path / "run-a.json"), str(tmp_path / "run-b.json")]) == 0
    assert "req/s" in capsys.readouterr().out


def test_refused_first_request_stops_the_run_with_the_reason() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"])) as url:
        cfg = BenchConfig(models=["not-served"], concurrency=2, requests=5, progress=False)
        with pytest.raises(ValueError, match="not-served.*HTTP 404"):
            run_bench(resolve_endpoint(url=url, env={}), cfg)


def test_prefix_tools_sets_the_shared_turn() -> None:
    assert len(prompts.tool_declarations(2)) == 2
    short = prompts.build_messages(0, with_tools=False, unique_prefix=False, tool_count=2)
    full = prompts.build_messages(0, with_tools=False, unique_prefix=False)
    assert len(short[0]["content"]) < len(full[0]["content"])
    none = prompts.build_messages(0, with_tools=False, unique_prefix=False, tool_count=0)
    assert none[0]["content"] == prompts.DEVELOPER_TEXT
    a = prompts.build_messages(0, True, unique_prefix=True)
    b = prompts.build_messages(0, True, unique_prefix=True)
    assert a[0] != b[0] and a[1] == b[1]


def test_fake_server_binds_loopback_only() -> None:
    import asyncio

    from tests.support.fake_server import FakeServer, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.5.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    with pytest.raises(SystemExit, match="loopback"):
        asyncio.run(FakeServer(FakeConfig(max_seconds=1)).serve("0.0.0.0", 0))


def test_fake_server_runs_as_a_module_for_the_docs() -> None:
    import os
    import subprocess
    import sys

    import requests

    env = {**os.environ, "FAKE_SERVER_API_KEY": "key-2"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.fake_server", "--port", "0", "--adapters", "2",
                             "--max-seconds", "60"], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split("listening on ", 1)[1].strip()
        assert requests.get(url + "/health", timeout=10).status_code == 200
        assert requests.get(url + "/v1/models", timeout=10).status_code == 401
        listed = requests.get(url + "/v1/models", headers={"Authorization": "Bearer key-2"}, timeout=10).json()
        assert [m["id"] for m in listed["data"]] == ["fake-functiongemma", "adapter-01", "adapter-02"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM ends it cleanly
        proc.stdout.close()


# ------------------------------------------------------------ prompts fitted to the server's context length


def test_context_length_is_the_base_models_for_its_adapters() -> None:
    from lorafleet.tools.bench.fit import context_length

    listed = [{"id": "fg", "parent": None, "max_model_len": 1024}, {"id": "weather", "parent": "fg"},
              {"id": "big", "parent": None, "max_model_len": 4096}, {"id": "other", "parent": "big"}]
    assert context_length(listed, ["weather"]) == 1024  # vLLM lists the length on base models only
    assert context_length(listed, ["other", "big"]) == 4096
    assert context_length(listed, ["big", "weather"]) == 1024, "the smallest of the chosen models"
    assert context_length([{"id": "m"}], ["m"]) is None, "a router's list carries no length: prompts go as asked"


def test_choose_prefix_tools_keeps_room_for_max_tokens() -> None:
    from lorafleet.tools.bench.fit import choose_prefix_tools

    tokens = {n: 100 + 80 * n for n in range(13)}.__getitem__  # 12 declarations: 1060 tokens
    kept = choose_prefix_tools(tokens, 1024, 32, 12)
    assert (kept.prefix_tools, kept.prompt_tokens, kept.changed) == (11, 980, True)
    assert "--prefix-tools 12 lowered to 11" in kept.note() and "max_model_len of 1024" in kept.note()
    assert not choose_prefix_tools(tokens, 32768, 32, 12).changed
    assert choose_prefix_tools(tokens, 1024, 32, 3).prefix_tools == 3, "never more than asked"
    with pytest.raises(ValueError, match="a prompt without tool declarations is 100 tokens.*lower --max-tokens to 50"):
        choose_prefix_tools(tokens, 150, 64, 12)


def test_bench_defaults_fit_a_short_context_and_say_what_changed(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # As the local demo target: max_model_len 1024, and twelve declarations a little over it.
    with running_fake_server(FakeConfig(adapters=["weather"], max_model_len=1024)) as url:
        rc = cli_main(["bench", "--url", url, "--requests", "8", "--concurrency", "2", "--no-progress",
                       "--out", str(tmp_path / "run.json")])
        with pytest.raises(SystemExit, match="lower --max-tokens to 929 or less"):
            cli_main(["bench", "--url", url, "--requests", "2", "--no-progress", "--max-tokens", "1000"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "note: --prefix-tools 12 lowered to 11 to fit the server's max_model_len of 1024" in out.out
    result = json.loads((tmp_path / "run.json").read_text())
    assert result["overall"]["ok"] == 8
    assert result["config"]["prefix_tools"] == 11
    assert result["prompt_fit"] == {"max_model_len": 1024, "max_tokens": 32, "prefix_tools_asked": 12,
                                    "prefix_tools": 11, "prompt_tokens": result["prompt_fit"]["prompt_tokens"],
                                    "changed": True}
    assert result["prompt_fit"]["prompt_tokens"] + 32 <= 1024
    assert max(s["prompt_tokens"] for s in result["samples"]) == result["prompt_fit"]["prompt_tokens"], \
        "the count is the longest prompt the run sent"
    assert any("lowered to 11" in note for note in result["notes"])


def test_bench_fits_declarations_written_into_the_prompt_without_a_tool_parser() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"], max_model_len=1024, tool_parser=False)) as url:
        cfg = BenchConfig(models=["weather"], concurrency=2, requests=4, progress=False)
        result = run_bench(resolve_endpoint(url=url, env={}), cfg)
    assert result["overall"]["ok"] == 4
    assert result["config"]["tools_declared"] is False
    assert result["prompt_fit"]["prefix_tools"] == 10, "as JSON text the declarations take more room"
    assert [n for n in result["notes"] if "lowered" in n] == [result["notes"][0]], "one note, for the fit sent"


def test_bench_leaves_prompts_alone_when_they_fit_or_the_limit_is_unknown() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"])) as url:
        result = run_bench(resolve_endpoint(url=url, env={}), BenchConfig(models=["weather"], requests=2, progress=False))
    assert result["prompt_fit"]["changed"] is False and result["config"]["prefix_tools"] == 12
    assert result["notes"] == []


def test_bench_stops_when_no_prompt_fits_naming_the_flag() -> None:
    with running_fake_server(FakeConfig(adapters=["weather"], max_model_len=120)) as url:
        cfg = BenchConfig(models=["weather"], requests=2, progress=False)
        with pytest.raises(ValueError, match="max_model_len is 120 tokens.*lower --max-tokens to"):
            run_bench(resolve_endpoint(url=url, env={}), cfg)
