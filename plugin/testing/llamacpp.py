"""A real llama.cpp OpenAI-compatible server for tests, with a tiny model written on the spot.

Not a test module: test files import it as ``from selfmoa.testing.llamacpp import ...``. It needs
only the standard library at import time (gguf/numpy/xllamacpp are imported where used).

* :func:`write_tiny_gguf` writes a valid GGUF file for the ``llama`` architecture: one layer,
  64-wide hidden state, a SentencePiece-style vocabulary of a few hundred tokens (control
  tokens, every printable ASCII character and the 256 byte-fallback tokens) and a ChatML chat
  template. No download is needed: the weights are built with numpy.
* :func:`llamacpp_server` starts llama.cpp's own HTTP server (the C++ ``llama-server`` code
  compiled into the ``xllamacpp`` wheel) in a child Python process bound to 127.0.0.1 on a
  free port, waits for ``/health`` and yields a :class:`LlamaServer` with ``base_url``
  (``http://127.0.0.1:PORT/v1``) and ``model`` (the id that ``/v1/models`` reports).

Output is gibberish by design, but it is shaped so protocol tests are deterministic: the
attention and MLP blocks write nothing into the residual stream, so the model is a bigram
table that can only pick printable ASCII pieces and newline, never an end-of-generation token,
a control token or a raw byte. Every generation therefore runs until ``max_tokens``
(``finish_reason == "length"``), a ``stop`` string or the end of the context, and the text is
always printable ASCII. ``write_tiny_gguf(..., stop_probability=p)`` writes a variant that also
ends its answers by itself (``</s>``, ``finish_reason == "stop"``) with probability about *p*
after each token, for tests that need complete answers.

Requirements: ``requirements/llamacpp.txt`` (xllamacpp, gguf, numpy).

The child process is this very file run as a script (``python llamacpp.py --serve ...``);
a native crash there cannot take the test process down, and the server's logs go to a file
whose tail is shown when start-up fails.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_ALIAS", "STRICT_CHAT_TEMPLATE", "LlamaServer", "llamacpp_server", "write_tiny_gguf"]

DEFAULT_ALIAS = "tiny-llama"

# Shape of the tiny model.
_N_EMBD = 64
_N_HEAD = 4
_N_FF = 128
_SPACE = "\u2581"  # SentencePiece's word-boundary marker

# ChatML, the format llama.cpp also falls back to; written into the file so the server does not
# have to guess.
_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ChatML that refuses misplaced roles as strict templates do (Mistral's, Gemma's, Llama 2's): a
# system message anywhere but first, or two user (or assistant-text) turns in a row. Like
# Mistral's, it counts only user turns and assistant turns without tool calls, so a user turn
# right after tool results (with no assistant text between) is refused too.
STRICT_CHAT_TEMPLATE = (
    "{%- set ns = namespace(previous='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and not loop.first -%}"
    "{{- raise_exception('A system message is only allowed first') -}}"
    "{%- endif -%}"
    "{%- set calls = message['role'] == 'assistant' and message.tool_calls is defined and message.tool_calls -%}"
    "{%- if message['role'] == 'user' or (message['role'] == 'assistant' and not calls) -%}"
    "{%- if message['role'] == ns.previous -%}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}"
    "{%- endif -%}"
    "{%- set ns.previous = message['role'] -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- endif -%}"
    "{%- if calls -%}{%- for call in message.tool_calls -%}"
    "{{- '[call] ' + call.function.name + ' ' + (call.function.arguments | tojson) -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def _vocab() -> tuple[list[str], list[float], list[int], set[int]]:
    """Tokens, scores, token types and the ids the model may generate."""
    # Token types of GGUF (gguf.TokenType): NORMAL=1, UNKNOWN=2, CONTROL=3, BYTE=6.
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [2, 3, 3, 3, 3]
    generable: set[int] = set()
    for b in range(256):
        if b == 0x0A:  # newline is only reachable through its byte token
            generable.add(len(tokens))
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
    pieces = [_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    pieces += [_SPACE + w for w in ("the", "a", "of", "and", "to", "is", "in", "it")]
    for piece in pieces:
        generable.add(len(tokens))
        tokens.append(piece)
        types.append(1)
    # SPM merges by score: longer pieces score higher so whole words are preferred.
    scores = [0.0 if t != 1 else float(len(tok)) for tok, t in zip(tokens, types, strict=True)]
    return tokens, scores, types, generable


def write_tiny_gguf(path: Path, *, n_ctx_train: int = 256, alias: str = DEFAULT_ALIAS,
                    seed: int = 0, stop_probability: float = 0.0,
                    stop_temperature: float = 0.7, chat_template: str = _CHAT_TEMPLATE) -> str:
    """Write a minimal llama-architecture GGUF model to *path*; return its model alias.

    The file is about 350 KiB of float32 weights; llama.cpp loads it in milliseconds.
    *n_ctx_train* becomes ``llama.context_length``. llama.cpp's server caps each slot's context
    at this value (with a warning in its log), so it bounds prompt + completion of one request
    whatever ``ctx_size`` is (see :attr:`LlamaServer.n_ctx`). The alias is stored as
    ``general.name``, which :func:`llamacpp_server` serves as the model id.

    *stop_probability* (default 0: the model never stops) makes the model end its answer on its
    own: after each generated token it emits ``</s>``, the file's declared EOS token (hence an
    end-of-generation token for llama.cpp: ``finish_reason == "stop"``, the token is not part
    of the text), with about this probability when sampled at *stop_temperature* through
    llama.cpp's default sampler chain (top-k 40, top-p 0.95, min-p 0.05, then temperature).
    Lengths are then roughly geometric: with 0.15, most answers stop within a handful of tokens
    and some still reach ``max_tokens``. It never stops right after a newline or a space, and
    every answer starts after the chat template's newline, so an answer is never empty or blank
    and a completion of ``max_tokens=1`` always ends with ``finish_reason == "length"``.
    Greedy decoding (temperature 0) stops only if *stop_probability* makes ``</s>`` the most
    likely token.

    *chat_template* (default: ChatML) is written into the file; llama.cpp renders every chat
    request with it. :data:`STRICT_CHAT_TEMPLATE` refuses misplaced roles, as strict ones do.
    """
    if not 0.0 <= stop_probability < 1.0:
        raise ValueError(f"stop_probability must be in [0, 1), got {stop_probability}")
    if stop_temperature <= 0.0:
        raise ValueError(f"stop_temperature must be > 0, got {stop_temperature}")
    import gguf
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types, generable = _vocab()
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(alias)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(_N_FF)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(_N_HEAD)
    writer.add_rope_dimension_count(_N_EMBD // _N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all float32
    writer.add_vocab_size(n_vocab)

    writer.add_tokenizer_model("llama")  # SentencePiece with byte fallback
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_chat_template(chat_template)

    f32 = np.float32
    # Residual stream = token embedding only (attention and MLP outputs are zero). Dimension 0
    # carries a large constant, so after the final RMS norm it is about +sqrt(n_embd) for every
    # position; the output matrix turns it into +8 for generable tokens and -8 for the others.
    embd = rng.normal(0.0, 0.3, (n_vocab, _N_EMBD)).astype(f32)
    embd[:, 0] = 8.0
    out = rng.normal(0.0, 1.0, (n_vocab, _N_EMBD)).astype(f32)
    allowed = np.zeros(n_vocab, dtype=bool)
    allowed[sorted(generable)] = True
    out[:, 0] = np.where(allowed, 1.0, -1.0)

    if stop_probability > 0.0:
        # Draws nothing from rng: every other weight stays that of the default model.
        _add_stop_feature(embd, out, allowed, tokens, stop_probability, stop_temperature)

    def w(rows: int, cols: int) -> np.ndarray:
        return rng.normal(0.0, 0.1, (rows, cols)).astype(f32)

    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(_N_EMBD, dtype=f32))
    writer.add_tensor("output.weight", out)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(_N_EMBD, dtype=f32))
    writer.add_tensor("blk.0.attn_q.weight", w(_N_EMBD, _N_EMBD))
    writer.add_tensor("blk.0.attn_k.weight", w(_N_EMBD, _N_EMBD))
    writer.add_tensor("blk.0.attn_v.weight", w(_N_EMBD, _N_EMBD))
    writer.add_tensor("blk.0.attn_output.weight", np.zeros((_N_EMBD, _N_EMBD), dtype=f32))
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(_N_EMBD, dtype=f32))
    writer.add_tensor("blk.0.ffn_gate.weight", w(_N_FF, _N_EMBD))
    writer.add_tensor("blk.0.ffn_up.weight", w(_N_FF, _N_EMBD))
    writer.add_tensor("blk.0.ffn_down.weight", np.zeros((_N_EMBD, _N_FF), dtype=f32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return alias


_EOS_ID = 2  # "</s>", declared with add_eos_token_id
# llama.cpp's default sampler chain (common_params_sampling): the truncations before temperature.
_TOP_K, _TOP_P, _MIN_P = 40, 0.95, 0.05
_RMS_EPS = 1e-5


def _eos_probability(x: np.ndarray, out: np.ndarray, temperature: float) -> float:
    """P(</s>) for the residual *x* under top-k, top-p, min-p, then temperature (as llama.cpp)."""
    import numpy as np

    normed = x / np.sqrt(np.mean(x * x) + _RMS_EPS)
    logits = out.astype(np.float64) @ normed
    order = np.argsort(-logits, kind="stable")[:_TOP_K]
    kept = logits[order]
    probs = np.exp(kept - kept[0])
    probs /= probs.sum()
    cut = int(np.searchsorted(np.cumsum(probs), _TOP_P)) + 1  # keep until the sum reaches top-p
    order, kept = order[:cut], kept[:cut]
    keep = kept >= kept[0] + np.log(_MIN_P)
    order, kept = order[keep], kept[keep]
    if _EOS_ID not in order:
        return 0.0
    final = np.exp((kept - kept[0]) / temperature)
    return float(final[list(order).index(_EOS_ID)] / final.sum())


def _add_stop_feature(embd: np.ndarray, out: np.ndarray, allowed: np.ndarray,
                      tokens: list[str], p: float, temperature: float) -> None:
    """Let the bigram model emit </s> after a generable token with probability about *p*.

    Embedding dimension 1 becomes a private "stop" feature: only the </s> row of the output
    matrix reads it (all other rows get 0 there, the </s> row gets nothing else), and each
    generable token's value is found by bisection so that P(</s> | that token) = p. After a
    newline or a space the feature is strongly negative: min-p removes </s> entirely.
    """
    import numpy as np

    out[:, 1] = 0.0
    out[_EOS_ID, :] = 0.0
    out[_EOS_ID, 1] = 1.0
    never = {tokens.index("<0x0A>"), tokens.index(_SPACE)}
    for tok in np.flatnonzero(allowed):
        x = embd[tok].astype(np.float64)
        if tok in never:
            embd[tok, 1] = -x[0]
            continue
        lo, hi = -x[0], 4.0 * x[0]
        for _ in range(40):
            x[1] = (lo + hi) / 2
            if _eos_probability(x, out, temperature) < p:
                lo = x[1]
            else:
                hi = x[1]
        embd[tok, 1] = hi


@dataclass
class LlamaServer:
    """A running server: point an OpenAI client at ``base_url`` and send ``model``."""

    base_url: str  # http://127.0.0.1:PORT/v1
    model: str  # the id /v1/models lists (any model name is accepted and answered as this one)
    root_url: str  # http://127.0.0.1:PORT, for /health, /props, /slots, /tokenize
    ctx_size: int  # what was asked for (--ctx-size)
    n_ctx: int  # what one request really gets: prompt + completion tokens of one slot
    parallel: int  # slots; also the largest `n` the server accepts
    log_path: Path
    pid: int

    def get_json(self, path: str, *, timeout: float = 10.0) -> object:
        """GET ``root_url + path`` and decode the JSON answer."""
        with urllib.request.urlopen(self.root_url + path, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(root_url: str) -> bool:
    try:
        with urllib.request.urlopen(root_url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(_read_from(path, 0).splitlines()[-n:])


def _gguf_name(model_path: Path) -> str | None:
    try:
        import gguf

        field = gguf.GGUFReader(str(model_path)).fields.get("general.name")
        return str(field.contents()) if field is not None else None
    except Exception:  # not fatal: llama.cpp then serves the file name
        return None


@contextlib.contextmanager
def llamacpp_server(model_path: Path, *, ctx_size: int = 512, parallel: int = 4,
                    alias: str | None = None, threads: int = 2,
                    startup_timeout: float = 60.0,
                    log_dir: Path | None = None,
                    n_predict: int | None = None) -> Iterator[LlamaServer]:
    """Run llama.cpp's server on 127.0.0.1:<free port> for the duration of the ``with`` block.

    *ctx_size* is the server's total KV context (``--ctx-size``), *parallel* its number of
    slots (``--parallel``; a request's ``n`` must be in 1..parallel, else 400). The KV cache is
    not unified (llama-server's default), so one request (prompt + completion) gets one slot:
    ``min(n_ctx_train, ctx_size / parallel rounded up to a multiple of 256)`` tokens, read back
    from ``/props`` as :attr:`LlamaServer.n_ctx`. *alias* is the model id served (default: the
    file's ``general.name``, else its stem). The server log goes to
    ``log_dir/llamacpp-server.log`` if *log_dir* is given (kept), else to a temporary file;
    a start-up failure raises RuntimeError with its tail. *n_predict* (``--n-predict``) caps the
    tokens of every completion server-side, whatever a request asks for: a real model that loops
    cannot then fill its slot's context (a client that sends no ``max_tokens``, like ``selfmoa ab``).
    """
    model_path = Path(model_path).resolve()
    if not model_path.is_file():
        raise FileNotFoundError(model_path)
    alias = alias or _gguf_name(model_path) or model_path.stem
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="llamacpp-")))
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "llamacpp-server.log"
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            root_url = f"http://127.0.0.1:{port}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--serve",
                   "--model", str(model_path), "--alias", alias, "--port", str(port),
                   "--ctx-size", str(ctx_size), "--parallel", str(parallel),
                   "--threads", str(threads)]
            if n_predict is not None:
                cmd += ["--n-predict", str(n_predict)]
            with open(log_path, "ab") as log:
                log_start = log.tell()
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log,
                                        stderr=subprocess.STDOUT, close_fds=True)
            try:
                props = _wait_ready(proc, root_url, model_path, startup_timeout)
                if props is not None:
                    yield LlamaServer(
                        base_url=root_url + "/v1", model=alias, root_url=root_url,
                        ctx_size=ctx_size,
                        n_ctx=int(props["default_generation_settings"]["n_ctx"]),
                        parallel=parallel, log_path=log_path, pid=proc.pid)
                    return
            finally:
                _stop(proc)
            log_text = _read_from(log_path, log_start)
            last_error = (f"llama.cpp server did not become ready on {root_url} within "
                          f"{startup_timeout:.0f} s (exit code {proc.returncode}); "
                          f"log tail:\n" + "\n".join(log_text.splitlines()[-40:]))
            if "couldn't bind" not in log_text:
                break  # not a port race: retrying would fail the same way
        raise RuntimeError(last_error)


def _wait_ready(proc: subprocess.Popen[bytes], root_url: str, model_path: Path,
                timeout: float) -> dict[str, Any] | None:
    """/props of our server once /health says 200; None if it died or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _health(root_url):
            try:
                props = _get(root_url + "/props")
            except (urllib.error.URLError, OSError, ValueError):
                props = {}
            # Make sure the answer came from our child, not from whoever won the port.
            if props.get("model_path") == str(model_path) and proc.poll() is None:
                return props
        time.sleep(0.1)
    return None


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        found: dict[str, Any] = json.loads(resp.read().decode("utf-8"))
        return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin (it then shuts the server down), escalate if it hangs."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(argv: list[str]) -> int:
    """Child process: start the server, report, block until stdin closes, shut down."""
    import argparse

    ap = argparse.ArgumentParser(prog="llamacpp.py --serve")
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ctx-size", type=int, required=True)
    ap.add_argument("--parallel", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-predict", type=int, default=None)
    args = ap.parse_args(argv)

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.n_gpu_layers = 0
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.warmup = False
    params.endpoint_props = True
    params.endpoint_slots = True
    if args.n_predict is not None:
        params.n_predict = args.n_predict

    server = xlc.Server(params)
    print(json.dumps({"listening_address": server.listening_address}), flush=True)
    try:
        while sys.stdin.buffer.read(1):
            pass
    except KeyboardInterrupt:
        pass
    del server
    print(json.dumps({"stopped": True}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.exit(_serve(sys.argv[2:]))
    print(__doc__)
