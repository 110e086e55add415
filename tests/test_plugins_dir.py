"""Loading: stock optillm serves our slugs from `selfmoa plugins-dir`, and `selfmoa serve` honours
optillm's `--plugins-dir` (which optillm 0.4.0 itself ignores)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import BIN, Proxy, SimLog

ASK = [{"role": "user", "content": "What is 2 + 2?"}]
ECHO_PLUGIN = '''
SLUG = "echo_probe"


def run(system_prompt, initial_query, client, model, request_config=None):
    return "echo probe loaded", 0
'''


def plugins_dir() -> Path:
    printed = subprocess.run([str(BIN / "selfmoa"), "plugins-dir"], capture_output=True, text=True, check=True)
    return Path(printed.stdout.strip())


def test_plugins_dir_holds_one_plugin_file_per_slug() -> None:
    files = sorted(p.stem for p in (plugins_dir() / "optillm" / "plugins").glob("*.py"))
    assert files == ["mixed_moa", "mixed_moa_seq", "self_moa", "self_moa_seq"]


@pytest.mark.parametrize("slug", ["self_moa", "mixed_moa", "self_moa_seq", "mixed_moa_seq"])
def test_stock_optillm_serves_every_slug_from_the_plugins_dir(stock_optillm: Proxy, simlog: SimLog, slug: str) -> None:
    extra = {"moa": {"proposers": ["sim-strong", "sim-medium"]}} if slug.startswith("mixed") else None
    reply = stock_optillm.client().chat.completions.create(model=f"{slug}-sim-strong", messages=ASK, extra_body=extra)
    assert reply.choices[0].message.content
    kinds = [c["kind"] for c in simlog.calls()]
    assert kinds.count("aggregate") == 1 and "propose" in kinds


@pytest.mark.parametrize("stream", [False, True])
def test_stock_optillm_passes_our_complete_reply_through(stock_optillm: Proxy, simlog: SimLog, stream: bool) -> None:
    """optillm 0.4.0 returns (and streams) a plugin's dict with `choices` and `usage` as it is:
    usage over every call, the final finish reason, an id, a created time."""
    body = {"model": "self_moa-sim-strong", "messages": ASK, "stream": stream,
            "stream_options": {"include_usage": True}, "moa": {"samples": 3}}
    response = stock_optillm.post(body)
    calls = [c for c in simlog.calls() if c["status"] == 200]
    prompt = sum(c["prompt_tokens"] for c in calls)
    if stream:
        events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
        chunks = [ChatCompletionChunk.model_validate(e) for e in events]
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == prompt
        return
    reply = ChatCompletion.model_validate(response.json())
    assert reply.id and reply.usage is not None and reply.usage.prompt_tokens == prompt
    assert reply.usage.completion_tokens == sum(c["completion_tokens"] for c in calls)


def test_stock_optillm_reports_bad_configuration_as_an_error(stock_optillm: Proxy) -> None:
    response = stock_optillm.post({"model": "self_moa-sim-strong", "messages": ASK, "moa": {"samples": -1}})
    assert response.status_code >= 400 and "moa.samples" in response.text


def test_selfmoa_serve_honours_plugins_dir(sim: BackgroundSim, tmp_path: Path) -> None:
    (tmp_path / "echo_probe.py").write_text(ECHO_PLUGIN)
    proxy = Proxy.selfmoa(sim.base_url, "--plugins-dir", str(tmp_path), log_path=tmp_path / "proxy.log")
    try:
        reply = proxy.client().chat.completions.create(model="echo_probe-sim-strong", messages=ASK)
        assert reply.choices[0].message.content == "echo probe loaded"
        ours = proxy.client().chat.completions.create(model="self_moa-sim-strong", messages=ASK)
        assert ours.choices[0].message.content
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def stock_optillm(sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    log = tmp_path_factory.mktemp("stock") / "optillm.log"
    proxy = Proxy([str(BIN / "optillm"), "--base-url", sim.base_url], cwd=plugins_dir(), log_path=log)
    yield proxy
    proxy.close()
