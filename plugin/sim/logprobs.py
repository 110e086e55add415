"""Made-up token log-probabilities, in OpenAI's `logprobs` shape.

The simulator has no tokenizer: its "tokens" are the pieces it streams a reply in (a word with the
whitespace around it), so a streamed chunk and its logprob entry always cover the same text, and
the tokens of a reply concatenate back to it. The numbers only have to look plausible to a client:
negative, mostly near zero, with the alternatives less likely than the token that was chosen.
"""

from __future__ import annotations

import random
import re
from typing import Any

PIECE_PATTERN = re.compile(r"\s*\S+\s*|\s+")
"""One streamed piece (and one logprob token): a word with the whitespace around it, or bare whitespace."""
MAX_TOP_LOGPROBS = 20

# Alternatives offered in `top_logprobs`: never the token itself, so there are always enough of them.
_ALTERNATIVES = (
    " the", " a", " and", " of", " to", " in", " is", " it", " that", " this", " for", " on", " with",
    " as", " so", " but", " we", " then", " which", " be", " I", ".", ",", "\n", " Answer",
)


def pieces(text: str) -> list[str]:
    """The text split the way the simulator streams it; "".join(pieces(t)) == t."""
    return PIECE_PATTERN.findall(text)


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def token_entry(token: str, top: int, rng: random.Random) -> dict[str, Any]:
    """One `logprobs.content` item: the token, its logprob, and `top` alternatives (itself first)."""
    logprob = -round(rng.expovariate(4.0) + 1e-4, 6)
    alternatives = rng.sample([a for a in _ALTERNATIVES if a != token], max(0, min(top, MAX_TOP_LOGPROBS) - 1))
    tops = [_entry(token, logprob)] if top > 0 else []
    lower = logprob
    for alternative in alternatives:
        lower = round(lower - rng.uniform(0.5, 3.0), 6)
        tops.append(_entry(alternative, lower))
    return {**_entry(token, logprob), "top_logprobs": tops}


def content_logprobs(text: str, top: int, rng: random.Random) -> list[dict[str, Any]]:
    """The `logprobs.content` list of a reply: one entry per piece of `text`."""
    return [token_entry(piece, top, rng) for piece in pieces(text)]


def logprobs_body(content: list[dict[str, Any]]) -> dict[str, Any]:
    """A choice's (or a chunk's) `logprobs` object."""
    return {"content": content, "refusal": None}
