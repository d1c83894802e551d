"""Near-duplicate detection: text normalisation, shingling and MinHash sketches.

Sketches are datasketch `MinHash` values under the "affine32" scheme (uint32 hash values).
The permutations are generated once per `Sketcher` and shared by every sketch: constructing a
`MinHash` from scratch regenerates them, which costs more than sketching the text itself.
The input hash is zlib.crc32 of the UTF-8 shingle: deterministic across processes (Python's
`hash` is salted per process, which would break replay) and about ten times cheaper than the
default SHA-1; datasketch mixes it with the MurmurHash3 finalizer before permuting.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
from datasketch import MinHash

_URL_RE = re.compile(r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|net|org|co\.uk|uk|ly|io|biz|info)\b\S*")
_EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DIGITS_RE = re.compile(r"\d+")
_SPACE_RE = re.compile(r"\s+")

SEED = 1  # fixed: stored sketches are only comparable with sketches from the same permutations


def normalize(text: str) -> str:
    """Fold per-recipient variation so that a template's copies look alike.

    Case, runs of whitespace, e-mail addresses, URLs and runs of digits each collapse to one
    form ("e", "u" and "0"), so names of numbers, links and amounts do not hide a template.
    """
    text = text.lower()
    text = _EMAIL_RE.sub("e", text)
    text = _URL_RE.sub("u", text)
    text = _DIGITS_RE.sub("0", text)
    return _SPACE_RE.sub(" ", text).strip()


def shingles(text: str, size: int) -> set[bytes]:
    """Character n-grams of the UTF-8 text (byte n-grams: same sets for ASCII, cheaper to cut)."""
    data = text.encode()
    if len(data) <= size:
        return {data}
    return {data[i:i + size] for i in range(len(data) - size + 1)}


class Sketcher:
    """Makes MinHash sketches of texts; one per process, shared by every request.

    It keeps one `MinHash` and clears it per text: construction would cost as much as sketching.
    """

    def __init__(self, num_perm: int = 128, shingle_size: int = 4) -> None:
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self._minhash = MinHash(num_perm=num_perm, seed=SEED, hashfunc=zlib.crc32, scheme="affine32")

    def sketch(self, text: str) -> np.ndarray:
        """The sketch's hash values (uint32, length num_perm): what clusters store and compare."""
        self._minhash.clear()
        self._minhash.update_batch(shingles(normalize(text), self.shingle_size))
        return self._minhash.hashvalues.copy()


def similarities(sketch: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of `sketch` with each row of `others` (shape k x num_perm)."""
    if len(others) == 0:
        return np.zeros(0)
    return np.count_nonzero(others == sketch, axis=1) / sketch.shape[0]
