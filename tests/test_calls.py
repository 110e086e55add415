"""Calls: deadline-bounded retries that honour Retry-After, and remembered parameter adaptation."""

from __future__ import annotations

import asyncio
from unittest.mock import AsyncMock

import pytest
from pytest_mock import MockerFixture

from selfmoa.approaches import BackendError, BackendMemory, Caller, Deadline, RetryPolicy
from selfmoa.approaches.calls import adapt
from tests.fakes import Call, FakeBackend, status_error

USER = [{"role": "user", "content": "hi"}]


def caller_for(client: FakeBackend, timeout: float = 10.0, memory: BackendMemory | None = None) -> Caller:
    return Caller({"default": client}, memory or BackendMemory(), Deadline(timeout), RetryPolicy(base=0.01))


def failing_first(errors: list[Exception]) -> FakeBackend:
    pending = list(errors)

    def script(call: Call) -> list[str]:
        if pending:
            raise pending.pop(0)
        return ["ok"]

    return FakeBackend(script)


def test_transient_failures_are_retried() -> None:
    client = failing_first([status_error(500, "boom"), status_error(503, "busy"), status_error(429, "slow down")])
    reply = asyncio.run(caller_for(client).complete("default", "m", USER, {}))
    assert reply.choices[0].content == "ok" and len(client.calls) == 4


def test_retry_after_is_honoured(mocker: MockerFixture) -> None:
    sleep = mocker.patch("asyncio.sleep", new_callable=AsyncMock)  # the pause between tries
    client = failing_first([status_error(429, "slow down", headers={"Retry-After": "4.5"})])
    asyncio.run(caller_for(client).complete("default", "m", USER, {}))
    assert len(client.calls) == 2
    (pause,), _ = sleep.call_args
    assert pause >= 4.5  # the server's wish wins over the (shorter) backoff


def test_backoff_grows_exponentially_with_jitter(mocker: MockerFixture) -> None:
    sleep = mocker.patch("asyncio.sleep", new_callable=AsyncMock)  # the pause between tries
    mocker.patch("selfmoa.approaches.calls.random.uniform", side_effect=lambda low, high: high)
    client = failing_first([status_error(503, "busy")] * 4)
    caller = Caller({"default": client}, BackendMemory(), Deadline(60), RetryPolicy(base=0.5, cap=3.0))
    asyncio.run(caller.complete("default", "m", USER, {}))
    assert [c.args[0] for c in sleep.call_args_list] == [1.0, 2.0, 3.0, 3.0]  # 0.5 * 2^attempt, capped


def test_retries_stop_at_the_deadline_with_the_backend_message() -> None:
    client = FakeBackend(lambda call: (_ for _ in ()).throw(status_error(500, "upstream exploded")))
    with pytest.raises(BackendError, match="m: HTTP 500: upstream exploded"):
        asyncio.run(caller_for(client, timeout=0.5).complete("default", "m", USER, {}))
    assert len(client.calls) >= 2


def test_client_errors_are_not_retried() -> None:
    client = FakeBackend(lambda call: (_ for _ in ()).throw(status_error(404, "no such model")))
    with pytest.raises(BackendError, match="HTTP 404: no such model"):
        asyncio.run(caller_for(client).complete("default", "m", USER, {}))
    assert len(client.calls) == 1


@pytest.mark.parametrize("param,message,expected", [
    ("max_tokens", "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.",
     {"max_completion_tokens": 50, "temperature": 0.7}),
    ("temperature", "Unsupported value: 'temperature' does not support 0.7", {"max_tokens": 50}),
])
def test_refused_parameters_are_adapted_once_and_remembered(param: str, message: str, expected: dict) -> None:
    def picky(call: Call) -> list[str]:
        if param in call.params:
            raise status_error(400, message)
        return ["ok"]

    client, memory = FakeBackend(picky), BackendMemory()
    asyncio.run(caller_for(client, memory=memory).complete("default", "m", USER, {"max_tokens": 50, "temperature": 0.7}))  # noqa: E501
    assert len(client.calls) == 2 and client.calls[1].params == expected
    client.calls.clear()
    asyncio.run(caller_for(client, memory=memory).complete("default", "m", USER, {"max_tokens": 50, "temperature": 0.7}))  # noqa: E501
    assert len(client.calls) == 1 and client.calls[0].params == expected


def test_adapt_renames_max_tokens() -> None:
    assert adapt({"max_tokens": 9, "top_p": 1}, frozenset({"max_tokens", "top_p"})) == {"max_completion_tokens": 9}


def test_calls_and_tokens_are_counted_in_all_and_per_model() -> None:
    caller = caller_for(FakeBackend())
    asyncio.run(caller.complete("default", "m", USER, {}, n=3))
    asyncio.run(caller.complete("default", "other", USER, {}))
    usage, by_model = caller.spent()
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (2, 10, 40)
    assert (by_model["m"].calls, by_model["m"].completion_tokens) == (1, 30)
    assert (by_model["other"].calls, by_model["other"].prompt_tokens) == (1, 5)


def test_backoff_never_takes_more_than_half_the_time_left() -> None:
    policy = RetryPolicy(base=10.0, cap=100.0)
    assert all(policy.delay(3, None, remaining=4.0) <= 2.0 for _ in range(50))  # type: ignore[operator]
    assert policy.delay(3, retry_after=5.0, remaining=4.0) is None  # the server's wait does not fit
    assert policy.delay(policy.attempts, None, remaining=60.0) is None
    assert policy.delay(1, None, remaining=0.3) is None  # too close to the deadline to try again
