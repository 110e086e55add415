"""`selfmoa serve` as a server: on uvicorn, with `--workers`, its own `--help`, a clean start,
client authentication on every route, and nothing of a request outliving its client."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import BIN, CLIENT_KEY, Proxy, SimLog

ASK = [{"role": "user", "content": "What is 2 + 2?"}]
PROXY_KEY = "sk-proxy-only-key-0123456789"


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def started_processes(proxy: Proxy) -> set[str]:
    """The pids of the server processes that said they started, from the log."""
    return {line.split("[", 1)[1].split("]", 1)[0] for line in proxy.log().splitlines()
            if "Started server process [" in line}


def test_workers_serve_one_port_from_several_processes(sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(sim.base_url, "--workers", "2", log_path=tmp_path / "proxy.log")
    try:
        client = proxy.client()
        answers = [client.chat.completions.create(model="self_moa-sim-strong", messages=ASK) for _ in range(6)]
        assert all(a.choices[0].message.content for a in answers)
        workers = [p for p in children(proxy.process.pid) if "selfmoa" in Path(f"/proc/{p}/cmdline").read_text()
                   or Path(f"/proc/{p}/cmdline").read_bytes().count(b"python")]
        assert len(workers) >= 2
        # the port answers once one worker is up; on a busy machine the other may still be starting
        deadline = time.monotonic() + 90
        while len(served := started_processes(proxy)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(served) >= 2, proxy.log()  # each worker started its own server process
    finally:
        proxy.close()


def test_help_lists_ours_and_optillms_options() -> None:
    shown = subprocess.run([str(BIN / "selfmoa"), "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for option in ("--moa-config", "--workers", "--base-url", "--approach", "--optillm-api-key", "--port"):
        assert option in shown.stdout
    assert shown.stdout.startswith("usage: selfmoa serve")


def test_an_unknown_flag_is_refused_naming_it(sim: BackgroundSim) -> None:
    refused = subprocess.run([str(BIN / "selfmoa"), "serve", "--base-url", sim.base_url, "--no-such-flag"],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--no-such-flag" in refused.stderr


def test_a_clean_start_names_the_skipped_plugins_in_one_line(proxy: Proxy) -> None:
    start = proxy.log().split("Application startup complete", 1)[0]
    assert " - ERROR - " not in start and "development server" not in start
    [skipped] = [line for line in start.splitlines() if "optillm plugins not loaded" in line]
    assert " - INFO - " in skipped and "torch" in skipped


# --- client authentication ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("guarded")
    running = Proxy.selfmoa(sim.base_url, "--optillm-api-key", PROXY_KEY, log_path=folder / "proxy.log")
    yield running
    running.close()


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/v1/chat/completions", {"model": "self_moa-sim-strong", "messages": ASK}),
    ("POST", "/v1/chat/completions", {"model": "self_moa-sim-strong", "messages": ASK, "stream": True}),
    ("POST", "/v1/chat/completions", {"model": "sim-strong", "messages": ASK}),
    ("POST", "/v1/chat/completions", {"model": "moa-sim-strong", "messages": ASK}),
    ("GET", "/v1/models", None),
    ("GET", "/no/such/route", None),
])
@pytest.mark.parametrize("key", [None, "sk-wrong-key-0123456789", PROXY_KEY[:-1]])
def test_every_route_but_health_wants_the_proxy_key(guarded: Proxy, simlog: SimLog, method: str, path: str,
                                                    body: object, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(method, f"{guarded.url}{path}", json=body, headers=headers, timeout=30)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    assert simlog.calls() == []  # refused before any backend call


def test_the_right_key_and_health_pass(guarded: Proxy, simlog: SimLog) -> None:
    assert httpx.get(f"{guarded.url}/health", timeout=10).status_code == 200
    client = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key=PROXY_KEY, max_retries=0)
    assert client.chat.completions.create(model="self_moa-sim-strong", messages=ASK).choices[0].message.content
    assert [c["params"].get("n") for c in simlog.of_kind("propose")] == [6]
    assert PROXY_KEY not in guarded.log()


# --- nothing outlives its client -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_goes_away_cancels_its_backend_calls(proxy: Proxy, simlog: SimLog, stream: bool) -> None:
    """The proposals hang; the client gives up after a second. Its call is cancelled at once (the
    simulator sees the connection close), and nothing more goes out for it: no raced duplicate,
    no aggregation, however long we wait."""
    simlog.patch({"sim-hang": {"rate_hang": 1.0, "hang_seconds": 3600}})
    client = proxy.client(timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        reply = client.chat.completions.create(model="self_moa-sim-hang", messages=ASK, stream=stream,
                                               extra_body={"moa": {"samples": 2, "timeout": 8}})
        list(reply) if stream else None  # type: ignore[call-overload]
    time.sleep(4)  # past the time the hung call would have been raced (half the 8 s left)
    calls = simlog.calls()
    assert [c["kind"] for c in calls] == ["propose"]
    [hung] = calls
    assert hung["ended"] is not None and hung["ended"] - hung["started"] < 60  # cut short, not the hour
    assert hung["fault"] == "hang"


def test_the_servers_own_calls_are_not_sdk_retries(proxy: Proxy, simlog: SimLog) -> None:
    """A backend 500 answered within the deadline by our retries: the SDK's own retries would rerun
    the ensemble, so our error says x-should-retry: false."""
    simlog.patch({"sim-broken": {"rate_500": 1.0}})
    response = proxy.post({"model": "self_moa-sim-broken", "messages": ASK, "moa": {"samples": 2, "timeout": 2}})
    assert response.status_code >= 500 and response.headers.get("x-should-retry") == "false"
    assert CLIENT_KEY not in response.text
