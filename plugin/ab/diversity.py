"""Diversity of a set of proposals: the Vendi score (Friedman and Dieng, 2023), as in the Self-MoA paper.

Vendi = exp(Shannon entropy of the eigenvalues of K/n), for a similarity kernel K over the n texts
with K[i][i] = 1. It is the "effective number of distinct texts": 1 when all are the same, n when
no two share anything. Our kernel: the cosine similarity of character-trigram count vectors
(texts case-folded, whitespace collapsed). It sees wording, not meaning: two proposals that reach
the same answer in different words count as diverse. Cheap, deterministic and model-free, which is
what a harness that runs offline needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.linalg import eigvalsh
from scipy.stats import entropy

NGRAM = 3


def ngram_counts(text: str, size: int = NGRAM) -> Counter[str]:
    """Character n-grams of the case-folded, whitespace-collapsed text (a short text is one gram)."""
    folded = " ".join(text.casefold().split())
    if len(folded) <= size:
        return Counter([folded]) if folded else Counter()
    return Counter(folded[i:i + size] for i in range(len(folded) - size + 1))


def similarity_matrix(texts: Sequence[str]) -> np.ndarray:
    """K[i][j] = cosine of the trigram count vectors of texts i and j (1 on the diagonal)."""
    counts = [ngram_counts(text) for text in texts]
    vocabulary = {gram: index for index, gram in enumerate(sorted(set().union(*counts)))}
    vectors = np.zeros((len(texts), max(1, len(vocabulary))))
    for row, grams in enumerate(counts):
        for gram, count in grams.items():
            vectors[row, vocabulary[gram]] = count
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    kernel: np.ndarray = unit @ unit.T
    np.fill_diagonal(kernel, 1.0)  # an empty text is still identical to itself
    return kernel


def vendi_score(texts: Sequence[str]) -> float | None:
    """The Vendi score of `texts` (between 1 and len(texts)); None for an empty set."""
    if not texts:
        return None
    kernel = similarity_matrix(texts)
    eigenvalues = np.clip(eigvalsh(kernel / len(texts)), 0.0, None)
    return float(np.exp(entropy(eigenvalues)))
