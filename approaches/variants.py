"""The four approaches of the paper, as one table: what each slug changes in a run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    mixed: bool  # proposers are different models (else samples of the request's one model)
    sequential: bool  # aggregation in sliding-window rounds (Self-MoA-Seq)


VARIANTS: dict[str, Variant] = {
    "self_moa": Variant(mixed=False, sequential=False),
    "mixed_moa": Variant(mixed=True, sequential=False),
    "self_moa_seq": Variant(mixed=False, sequential=True),
    "mixed_moa_seq": Variant(mixed=True, sequential=True),
}
