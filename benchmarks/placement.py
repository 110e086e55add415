"""`make bench`, placement part: the prompt work of the aggregation call under each `moa.placement`,
measured on a REAL llama.cpp server (the tiny GGUF model the tests write; xllamacpp).

For each placement a fresh server answers `--trials` Self-MoA requests, each over a fresh
conversation of about `--conversation-tokens` tokens (a system prompt and a long user message, as
RAG prompts are), with `--samples` proposals. The requests run through selfmoa's own core
(`moa_events`, the recipe resolved from a `moa` object as `selfmoa serve` resolves it), over a
`Backend` that speaks llama.cpp's HTTP API and keeps what it reports beyond OpenAI's fields. Of the
aggregation call (streamed, as for a streaming client) it records:

- evaluated prompt tokens, `cache_n` (prompt tokens served from the slot's cache) and `prompt_ms`
  (the server's time evaluating the prompt), from the `timings` object llama.cpp adds to its response;
- the time to its first streamed token.

Goal (`last_user`): evaluated prompt tokens <= 1.2 x the tokens of what the aggregation adds to the
conversation (instructions and fenced candidates). Exits non-zero when it is missed. The model is
tiny (one layer, 64 wide): times are small and shared-CPU noisy; token counts are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.llamacpp_server: the tiny model and the server around it

from selfmoa.approaches import AnswerDelta, BackendError, BackendMemory, Caller, Deadline, moa_events  # noqa: E402
from selfmoa.approaches.backend import Chunk, Completion, parse_chunk, parse_completion  # noqa: E402
from selfmoa.approaches.prompts import CANDIDATE_PATTERN  # noqa: E402
from selfmoa.config import ServerConfig, resolve  # noqa: E402
from selfmoa.testing.llamacpp import LlamaServer, llamacpp_server, write_tiny_gguf  # noqa: E402

PLACEMENTS = ("system", "last_user")
GOAL = 1.2
WORDS = ("the harbor ledger lists cargo of amber and cobalt for each ship in port it notes the tide "
         "the pilot the berth and whether the duty is paid to the customs office of the town").split()


@dataclass
class CallRecord:
    """One backend call as llama.cpp answered it."""

    messages: list[dict[str, Any]]
    stream: bool
    timings: dict[str, Any] = field(default_factory=dict)
    ttft_s: float | None = None

    @property
    def aggregation(self) -> bool:
        return any(CANDIDATE_PATTERN.search(str(m.get("content"))) for m in self.messages)


class LlamaBackend:
    """A selfmoa `Backend` over llama.cpp's chat endpoint that records each call's `timings` and,
    streamed, when its first token came. An HTTP error is raised to the core as selfmoa's own, and
    recorded: any ends the benchmark."""

    def __init__(self, server: LlamaServer) -> None:
        self.base_url = server.base_url
        self.calls: list[CallRecord] = []
        self.errors: list[str] = []

    async def complete(self, model: str, messages: Sequence[dict[str, Any]], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=300) as http:
            response = await http.post("/chat/completions", json={"model": model, "messages": list(messages),
                                                                   **params})
        self._check(response)
        body = response.json()
        self.calls.append(CallRecord(list(messages), False, body.get("timings") or {}))
        return parse_completion(body)

    @asynccontextmanager
    async def stream(self, model: str, messages: Sequence[dict[str, Any]], params: Mapping[str, Any], *,
                     timeout: float, headers: Mapping[str, str] | None = None) -> AsyncIterator[AsyncIterator[Chunk]]:
        record = CallRecord(list(messages), True)
        self.calls.append(record)
        body = {"model": model, "messages": list(messages), **params, "stream": True}
        async with httpx.AsyncClient(base_url=self.base_url, timeout=300) as http:
            async with http.stream("POST", "/chat/completions", json=body) as response:
                if response.is_error:
                    await response.aread()
                self._check(response)
                yield self._events(response, record, time.perf_counter())

    async def _events(self, response: httpx.Response, record: CallRecord, started: float) -> AsyncIterator[Chunk]:
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: "):])
            chunk = parse_chunk(event)
            if record.ttft_s is None and any(d.content for d in chunk.deltas):
                record.ttft_s = time.perf_counter() - started
            record.timings = event.get("timings") or record.timings
            yield chunk

    def _check(self, response: httpx.Response) -> None:
        if response.is_error:
            self.errors.append(f"HTTP {response.status_code}: {response.text[:300]}")
            raise BackendError("llama.cpp", self.errors[-1], status=response.status_code)


def tokens(server: LlamaServer, text: str) -> int:
    response = httpx.post(f"{server.root_url}/tokenize", json={"content": text}, timeout=30)
    response.raise_for_status()
    return len(response.json()["tokens"])


def conversation(server: LlamaServer, size: int, seed: int) -> list[dict[str, Any]]:
    """A system prompt and a user message of about `size` tokens: a made-up document, then a question."""
    rng = random.Random(seed)
    document: list[str] = []
    while not document or tokens(server, " ".join(document)) < size:
        document += [f"Entry {len(document) + seed}:", *rng.choices(WORDS, k=40)]
    return [{"role": "system", "content": "You answer questions about the ledger below."},
            {"role": "user", "content": " ".join(document) + "\n\nWhich cargo appears most often?"}]


@dataclass
class Trial:
    placement: str
    conversation_tokens: int
    added_tokens: int  # what the aggregation prompt adds to the conversation: instructions + candidates
    prompt_n: int  # prompt tokens llama.cpp evaluated for the aggregation
    cache_n: int  # prompt tokens its cache served
    prompt_ms: float  # llama.cpp's own time evaluating them
    ttft_s: float  # the aggregation's time to its first streamed token
    answer_ttft_s: float  # the request's time to its first answer token (proposals included)


def added_text(placed: Sequence[dict[str, Any]], original: Sequence[dict[str, Any]]) -> str:
    """What the aggregation prompt holds beyond the conversation (under either placement)."""
    extra = [str(m["content"]) for m in placed if m not in original]
    for old in original:
        extra = [e[len(str(old["content"])):] if e.startswith(str(old["content"])) else e for e in extra]
    return "".join(extra)


def trial(server: LlamaServer, placement: str, messages: list[dict[str, Any]], args: argparse.Namespace) -> Trial:
    backend = LlamaBackend(server)
    body = {"max_tokens": args.answer_tokens,
            "moa": {"samples": args.samples, "max_tokens": args.proposal_tokens, "placement": placement}}
    recipe = resolve("self_moa", server.model, body, messages, ServerConfig())
    caller = Caller({"default": backend}, BackendMemory(), Deadline(recipe.timeout))
    started = time.perf_counter()
    answer_ttft = asyncio.run(first_answer_piece(recipe, messages, caller, started))
    aggregations = [c for c in backend.calls if c.aggregation]
    if backend.errors or len(aggregations) != 1:
        raise SystemExit(f"placement: the {placement} request did not run as one clean aggregation "
                         f"({len(aggregations)} aggregation calls; errors: {backend.errors})")
    (aggregation,) = aggregations
    return Trial(placement, tokens(server, messages[-1]["content"]),
                 tokens(server, added_text(aggregation.messages, messages)),
                 int(aggregation.timings.get("prompt_n", -1)), int(aggregation.timings.get("cache_n", -1)),
                 float(aggregation.timings.get("prompt_ms", -1)), aggregation.ttft_s or 0.0, answer_ttft or 0.0)


async def first_answer_piece(recipe: Any, messages: list[dict[str, Any]], caller: Caller, started: float
                             ) -> float | None:
    """Seconds from `started` to the streamed answer's first piece (the run read to its end)."""
    first = None
    async for event in moa_events(recipe, messages, caller, stream=True):
        if isinstance(event, AnswerDelta) and first is None:
            first = time.perf_counter() - started
    return first


def run(placement: str, args: argparse.Namespace, folder: Path) -> list[Trial]:
    """`--trials` requests on a fresh server: the first meets a cold cache, later ones a warm one."""
    parallel = args.samples + 2
    # room for the conversation, the instructions (~830 tokens in this vocabulary), the candidates
    # (a text can take more tokens read back than it took written) and the answer
    needed = args.conversation_tokens + 1200 + args.samples * (3 * args.proposal_tokens + 40) + args.answer_tokens
    n_ctx = 256 * -(-needed // 256)
    model = folder / f"tiny-{placement}.gguf"
    write_tiny_gguf(model, n_ctx_train=n_ctx, stop_probability=0.05)
    with llamacpp_server(model, ctx_size=n_ctx * parallel, parallel=parallel, log_dir=folder / placement) as server:
        return [trial(server, placement, conversation(server, args.conversation_tokens, seed), args)
                for seed in range(args.trials)]


def table(results: dict[str, list[Trial]]) -> list[str]:
    """One row per trial: the first on a fresh server meets a cold cache, later ones a warm one."""
    lines = ["| placement | trial | conversation tokens | added tokens | evaluated prompt tokens | cache_n | "
             "evaluated / added | prompt_ms | aggregation TTFT (ms) | answer TTFT (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for placement, trials in results.items():
        for number, t in enumerate(trials, start=1):
            lines.append(f"| `{placement}` | {number}{' (cold)' if number == 1 else ''} | {t.conversation_tokens} | "
                         f"{t.added_tokens} | {t.prompt_n} | {t.cache_n} | {t.prompt_n / t.added_tokens:.2f} | "
                         f"{t.prompt_ms:.0f} | {t.ttft_s * 1000:.0f} | {t.answer_ttft_s * 1000:.0f} |")
    return lines


def summary(results: dict[str, list[Trial]]) -> list[str]:
    def median(placement: str, name: str) -> float:
        return statistics.median(float(getattr(t, name)) for t in results[placement])

    def versus(name: str, scale: float = 1.0, unit: str = "") -> str:
        system, last_user = median("system", name), median("last_user", name)
        return f"{system * scale:.0f}{unit} with `system`, {last_user * scale:.0f}{unit} with `last_user` " \
               f"({system / last_user:.1f}x)"

    return ["Medians of the aggregation call:",
            f"- evaluated prompt tokens: {versus('prompt_n')}",
            f"- llama.cpp's prompt_ms: {versus('prompt_ms', unit=' ms')}",
            f"- time to first streamed token: {versus('ttft_s', 1000, ' ms')}"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="requests per placement (median reported)")
    parser.add_argument("--conversation-tokens", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--proposal-tokens", type=int, default=48, help="proposers' max_tokens")
    parser.add_argument("--answer-tokens", type=int, default=16, help="the aggregation's max_tokens")
    parser.add_argument("--json", type=Path, help="also write every trial as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"REAL llama.cpp server (xllamacpp), tiny GGUF model; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}"
          f" UTC, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="selfmoa-placement-") as folder:
        results = {p: run(p, args, Path(folder)) for p in PLACEMENTS}
    print("\n".join(table(results)))
    print("\n" + "\n".join(summary(results)))
    cached = results["last_user"]
    ratio = statistics.median(t.prompt_n / t.added_tokens for t in cached)
    met = all(t.prompt_n <= GOAL * t.added_tokens for t in cached)
    print(f"Goal (last_user): evaluated prompt tokens <= {GOAL} x added tokens in every trial: "
          f"median {ratio:.2f} -> {'PASS' if met else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({p: [asdict(t) for t in ts] for p, ts in results.items()}, indent=2))
    if not met:
        print("placement: the goal was missed", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
