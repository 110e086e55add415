"""The command line as a user types it: `selfmoa sim` with its flags, and SELFMOA_CONFIG for stock optillm."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import BIN, Proxy, SimLog

PROFILE = """
seed: 0
time_scale: 1.0
models:
  only-model: {accuracy: 0.5, ttft_ms: 5000}
"""
ASK = [{"role": "user", "content": "Name a colour."}]


@contextmanager
def sim_process(*flags: str) -> Iterator[str]:
    process = subprocess.Popen([str(BIN / "selfmoa"), "sim", "--port", "0", *flags], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("selfmoa sim listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        process.terminate()
        process.wait(10)


def answers(base_url: str, count: int = 3) -> list[str]:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="only-model", messages=ASK, n=count, temperature=1.0)
    return [c.message.content or "" for c in reply.choices]


def test_sim_flags_profile_time_scale_and_seed(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    with sim_process("--profile", str(profile), "--time-scale", "0", "--seed", "1") as url:
        models = httpx.get(f"{url}/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == ["only-model"]
        assert httpx.get(f"{url[:-3]}/sim/profile", timeout=10).json()["time_scale"] == 0
        first = answers(url)
    with sim_process("--profile", str(profile), "--time-scale", "0", "--seed", "1") as url:
        assert answers(url) == first
    with sim_process("--profile", str(profile), "--time-scale", "0", "--seed", "2") as url:
        assert answers(url) != first


def test_stock_optillm_reads_the_server_config_from_selfmoa_config(sim: BackgroundSim, simlog: SimLog,
                                                                   tmp_path: Path) -> None:
    config = tmp_path / "selfmoa.yaml"
    config.write_text("presets:\n  pair: {samples: 2, aggregator: sim-medium}\n")
    plugins = subprocess.run([str(BIN / "selfmoa"), "plugins-dir"], capture_output=True, text=True, check=True)
    proxy = Proxy([str(BIN / "optillm"), "--base-url", sim.base_url], cwd=Path(plugins.stdout.strip()),
                  log_path=tmp_path / "optillm.log", env={"SELFMOA_CONFIG": str(config)})
    try:
        proxy.client().chat.completions.create(model="self_moa-sim-strong", messages=ASK,
                                               extra_body={"moa": {"preset": "pair"}})
    finally:
        proxy.close()
    assert [(c["model"], c["n"]) for c in simlog.calls()] == [("sim-strong", 2), ("sim-medium", 1)]
