"""How a simulated aggregation words its synthesis, once the answer it carries is decided.

A real model asked n times to combine the same candidates writes n different texts even when it
lands on the same answer; a client that wants n distinct replies (optillm's own `n` test) must see
that. So the text is built from the candidates it read (how many agree, on what, which of them
carry the answer it keeps) and from the sample's own draw: a tally, a candidate it leans on and a
verdict, each phrased one of several ways. Hundreds of wordings for one prompt make two samples
rarely identical.

The text stays one line before the final `Answer: X`, never writes "answer:" itself (so the last
`Answer:` stays the one that counts) and never starts a line with "Candidate N", which a later
layer would read as a candidate header.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

OPENING = "Weighing the {count} candidates"
"""Fixed, so a test (or a person) can tell an aggregation reply at a glance."""

_UNANIMOUS = ("all {count} agree on {top}", "every one of them reaches {top}", "they are unanimous on {top}",
              "each of them ends at {top}")
_MAJORITY = ("{agree} of the {count} reach {top}", "{top} comes up {agree} times out of {count}",
             "{agree} of them agree on {top}", "the largest group, {agree} of {count}, gives {top}")
_SPLIT = ("no two of them agree", "each of them reaches a different result", "they all disagree")
_ALONE = ("only one of them reaches a result, {top}", "{top} is the one result among them")
_SINGLE = ("the only one gives {top}", "the one candidate reaches {top}", "its working ends at {top}")
_SILENT = ("{silent} of them give no final result", "{silent} of them stop without a result")
_ONE_SILENT = ("one of them gives no final result", "one of them stops without a result")
_LEANS = ("the working in candidate {number} is the clearest", "candidate {number} sets out its steps most plainly",
          "I lean on the reasoning of candidate {number}", "the steps of candidate {number} check out")
_VERDICTS = ("so I settle on {answer}", "and the soundest working points to {answer}",
             "which leaves {answer} as the best-supported result", "and {answer} holds up when I recheck it",
             "so the combined response is {answer}", "and I side with {answer}", "so I go with {answer}",
             "and on balance {answer} is right")
_NOTHING = ("none of them states a clear final answer", "not one of them reaches a usable result",
            "I find no final result to build on in any of them")


def tally(answers: Sequence[str | None], rng: random.Random) -> str:
    """How the candidates' answers fall: unanimous, a largest group, all different; and how many have none."""
    given = [a for a in answers if a is not None]
    counts = Counter(given)
    top, agree = counts.most_common(1)[0] if counts else (None, 0)
    silent = len(answers) - len(given)
    if agree == len(answers):
        text = rng.choice(_SINGLE if agree == 1 else _UNANIMOUS)
    elif agree > 1:
        text = rng.choice(_MAJORITY)
    else:
        text = rng.choice(_ALONE if len(given) == 1 else _SPLIT)
    if silent and len(given) > 1:
        text += ", and " + rng.choice(_ONE_SILENT if silent == 1 else _SILENT)
    return text.format(count=len(answers), top=top, agree=agree, silent=silent)


def lean(answers: Sequence[str | None], answer: str, rng: random.Random) -> str:
    """A candidate the synthesis says it follows: one of those that carry the answer it keeps."""
    holders = [number for number, given in enumerate(answers, start=1) if given == answer]
    return rng.choice(_LEANS).format(number=rng.choice(holders)) if holders else ""


def synthesis_text(answers: Sequence[str | None], answer: str | None, rng: random.Random) -> str:
    """The reply of an aggregation that read candidates with `answers` and keeps `answer` (None: no answer)."""
    opening = OPENING.format(count=len(answers)).removesuffix("s" if len(answers) == 1 else "")
    if answer is None:
        return f"{opening}, {rng.choice(_NOTHING)}."
    parts = [tally(answers, rng), lean(answers, answer, rng), rng.choice(_VERDICTS).format(answer=answer)]
    body = "; ".join(part for part in parts[:2] if part)
    return f"{opening}, {body}, {parts[2]}.\nAnswer: {answer}"
