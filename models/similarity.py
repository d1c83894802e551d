"""Near-duplicate detection: text normalisation, shingling and MinHash sketches.

Sketches are datasketch `MinHash` values under the "affine32" scheme (uint32 hash values): the
permutations are datasketch's (seed 1), and the input hash is zlib.crc32 of the UTF-8 shingle,
deterministic across processes (Python's `hash` is salted per process, which would break replay).
datasketch hashes shingle by shingle in Python; `Sketcher` computes the same values in a few
numpy operations per text, or per batch of texts (bit-identical, tests/unit/test_similarity.py):
the crc32 of a 4-byte string is affine in its bytes, so the crc32 of every 4-gram is two lookups
(of byte pairs) XORed.
"""

from __future__ import annotations

import functools
import re
import zlib
from typing import Iterable, Sequence

import numpy as np
from datasketch import MinHash

from .reading import as_seen

_TLDS = r"(?:com|net|org|co\.uk|uk|ly|io|biz|info)"
_URL_RE = re.compile(rf"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.{_TLDS}\b\S*")
# What every match of _URL_RE contains: most texts have a full stop and no link, and this search
# (a scan for three characters) costs a sixth of the URL pattern's (tried at every word start).
_URL_HINT_RE = re.compile(rf"://|www\.|\.{_TLDS}\b")
_EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_DIGITS_RE = re.compile(r"\d+")
_PUNCTUATION_RE = re.compile(r"[^\w\s]+|_+")  # noise a spammer sprinkles ("!!", "...", "*"); words remain
# The same two folds for an ASCII text, on its bytes: every byte but a letter or a digit is a space
# (punctuation, "_", control characters, and the whitespace str.split knows but bytes.split does
# not, \x1c-\x1f), then runs of digits are "0" (ASCII digits are all the digits \d knows there).
_ASCII_SPACES = bytes(c if chr(c).isalnum() else 0x20 for c in range(128)) + bytes(range(128, 256))
_DIGITS_BYTES_RE = re.compile(rb"\d+")

SEED = 1  # fixed: stored sketches are only comparable with sketches from the same permutations


def normalize(text: str) -> str:
    """Fold per-recipient variation so that a template's copies look alike.

    The text as a reader sees it (models/reading.py: case, look-alike letters, invisible
    characters, accents, emoji, spaced-out letters), then runs of whitespace, e-mail addresses,
    URLs and runs of digits each collapse to one form ("e", "u" and "0"), so names of numbers,
    links and amounts do not hide a template.
    """
    return normalized_bytes(text).decode()


def normalized_bytes(text: str) -> bytes:
    """`normalize(text)` in UTF-8: what shingles are cut from."""
    text = as_seen(text)
    if "@" in text:  # the pattern cannot match without it: most texts skip the scan
        text = _EMAIL_RE.sub("e", text)
    if _URL_HINT_RE.search(text):
        text = _URL_RE.sub("u", text)
    if text.isascii():  # most texts: a table and a byte pattern instead of two Unicode patterns
        return b" ".join(_DIGITS_BYTES_RE.sub(b"0", text.encode().translate(_ASCII_SPACES)).split())
    text = _DIGITS_RE.sub("0", _PUNCTUATION_RE.sub(" ", text))
    return " ".join(text.split()).encode()  # str.split and \s+ agree on what whitespace is


def shingles(text: str, size: int) -> set[bytes]:
    """Character n-grams of the UTF-8 text (byte n-grams: same sets for ASCII, cheaper to cut)."""
    data = text.encode()
    if len(data) <= size:
        return {data}
    return {data[i : i + size] for i in range(len(data) - size + 1)}


# One text's products are (shingle, permutation) rows: times a tile of that many rows of the
# permutations' coefficients, multiply and add are one contiguous loop each (broadcasting a row,
# numpy loops row by row: a third of the cost again). 512 rows: 99.9 % of the SMS corpus's texts;
# a longer text broadcasts. 256 KB a tile.
TEXT_ROWS = 512
# A batch's products are (permutation, shingle) rows, made BATCH_SHINGLES shingles at a time: the
# minimum over each text's shingles is then a contiguous run of each row (np.minimum.reduceat
# along rows is 2x dearer), and 512 KB of products stay in a core's cache. 512 KB a tile.
BATCH_SHINGLES = 1024

_U1, _U2 = np.dtype(np.uint8), np.dtype("<u2")


@functools.cache
def _crc32_tables(size: int) -> tuple[tuple[int, np.dtype, np.ndarray], ...]:
    """crc32 is affine over GF(2): crc32(m) = crc32(zeros) ^ XOR_i T[i][m_i] for strings m of
    `size` bytes, with T[i][v] = crc32(v at position i, zeros elsewhere) ^ crc32(zeros). Bytes are
    looked up in pairs, (offset, little-endian uint16, a 65,536-entry table of T[i] ^ T[i + 1]),
    the last alone when `size` is odd, and crc32(zeros) is folded into the first table."""
    zero = zlib.crc32(bytes(size))
    byte = [
        np.array([zlib.crc32(bytes(i) + bytes([v]) + bytes(size - i - 1)) ^ zero for v in range(256)], np.uint32)
        for i in range(size)
    ]
    pair = np.arange(1 << 16)
    tables = [
        (i, _U2, byte[i][pair & 255] ^ byte[i + 1][pair >> 8]) if i + 1 < size else (i, _U1, byte[i])
        for i in range(0, size, 2)
    ]
    tables[0][2][...] ^= np.uint32(zero)
    for _, _, table in tables:
        table.flags.writeable = False  # shared by every Sketcher of the process
    return tuple(tables)


@functools.cache
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """datasketch's permutations (a, b) as tiles: TEXT_ROWS rows of them, and BATCH_SHINGLES
    columns of them."""
    a, b = MinHash(num_perm=num_perm, seed=SEED, hashfunc=zlib.crc32, scheme="affine32").permutations
    a, b = a.astype(np.uint32), b.astype(np.uint32)
    tiles = (
        np.tile(a, (TEXT_ROWS, 1)),
        np.tile(b, (TEXT_ROWS, 1)),
        np.repeat(a.reshape(-1, 1), BATCH_SHINGLES, axis=1),
        np.repeat(b.reshape(-1, 1), BATCH_SHINGLES, axis=1),
    )
    for tile in tiles:
        tile.flags.writeable = False
    return tiles


# `Sketcher.presketch` pays when most of a batch's texts are then asked for: alone a text costs
# ~223k instructions, in a batch ~140k (SMS corpus), so below ~2 in 3 asked for it costs more than
# it saves (bench.identity's stream: consent settles 97 % of sends before the burst step). A batch
# that did not pay pauses presketching for PRESKETCH_PAUSE batches (their texts are not even read),
# then a batch tries again: in a stream where it never pays, one batch in 33 is sketched for naught.
PRESKETCH_USE = 0.65
PRESKETCH_PAUSE = 32
PRESKETCH_MIN = 4  # texts: a smaller batch costs more at once than text by text (one text: 1.5x)

# datasketch's 32-bit MurmurHash3 finalizer, applied to each input hash before permuting
_S16, _M1, _S13, _M2 = np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35)


def _mix(hv: np.ndarray) -> None:
    hv ^= hv >> _S16
    hv *= _M1
    hv ^= hv >> _S13
    hv *= _M2
    hv ^= hv >> _S16


class Sketcher:
    """Makes MinHash sketches of texts; one per process, shared by every request."""

    def __init__(self, num_perm: int = 128, shingle_size: int = 4) -> None:
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self._tables = _crc32_tables(shingle_size)
        self._a_rows, self._b_rows, self._a_columns, self._b_columns = _permutations(num_perm)
        self._memo: dict[str, np.ndarray] = {}  # the last presketched batch's sketches, by text
        self._taken = 0  # ... how many times `sketch` took one
        self._paused = 0  # batches left that presketch skips (PRESKETCH_PAUSE)

    def presketch(self, texts: Iterable[str]) -> None:
        """Sketch a batch's texts at once (`sketch_many`) for `sketch` to take until the next call,
        while that pays (PRESKETCH_USE); `texts` are then not read. Only a memo: a sketch taken from
        it is the one `sketch` makes, so no decision can depend on whether or when this is called."""
        if self._memo and self._taken < PRESKETCH_USE * len(self._memo):
            self._paused = PRESKETCH_PAUSE
        self._memo, self._taken = {}, 0
        if self._paused:
            self._paused -= 1
            return
        unique = list(dict.fromkeys(texts))
        if len(unique) < PRESKETCH_MIN:
            return
        sketches = self.sketch_many(unique)
        sketches.flags.writeable = False  # every caller that asks for the text gets this one
        self._memo = dict(zip(unique, sketches))

    def _windows(self, data: bytes, n: int) -> np.ndarray:
        """crc32 of the shingle_size bytes at each of the first `n` offsets of `data`."""
        hv = None
        for offset, dtype, table in self._tables:  # (each offset's bytes as uint16: a view, no copy)
            h = table[np.ndarray((n,), dtype, data, offset, (1,))]
            hv = h if hv is None else np.bitwise_xor(hv, h, out=hv)
        assert hv is not None
        return hv

    def sketch(self, text: str) -> np.ndarray:
        """The sketch's hash values (uint32, length num_perm): what clusters store and compare.
        Equal to datasketch's `MinHash.update_batch(shingles(normalize(text), shingle_size))`."""
        known = self._memo.get(text)
        if known is not None:  # presketched
            self._taken += 1
            return known
        data = normalized_bytes(text)
        n = len(data) - self.shingle_size + 1  # shingles, counted with repeats (the minimum ignores them)
        if n <= 1:  # one shingle: the whole text
            n, hv = 1, np.array([zlib.crc32(data)], dtype=np.uint32)
        else:
            hv = self._windows(data, n)
        _mix(hv)
        rows = slice(n) if n <= TEXT_ROWS else slice(1)
        permuted = np.repeat(hv, self.num_perm).reshape(n, -1)
        permuted *= self._a_rows[rows]
        permuted += self._b_rows[rows]  # uint32 arithmetic wraps: datasketch's "mod 2^32"
        return permuted.min(axis=0)

    def sketch_many(self, texts: Sequence[str]) -> np.ndarray:
        """The sketches of `texts`, row i being `sketch(texts[i])`: the batch's shingles are hashed
        and mixed in one pass, permuted BATCH_SHINGLES at a time (a text's shingles together)."""
        size, k = self.shingle_size, len(texts)
        out = np.empty((k, self.num_perm), np.uint32)
        if k == 0:
            return out
        datas = [normalized_bytes(text) for text in texts]
        lengths = np.fromiter(map(len, datas), np.intp, k)
        n = np.maximum(lengths - (size - 1), 1)  # each text's shingles, with repeats
        ends = np.cumsum(n)
        starts = ends - n  # where each text's shingles begin in hv
        joined = b"".join(datas) + bytes(size)  # (padded: a text shorter than a shingle has its window)
        at = np.repeat(np.cumsum(lengths) - lengths - starts, n)  # shingle -> its offset in `joined`
        hv = self._windows(joined, len(joined) - size + 1)[at + np.arange(len(at))]
        for i in np.flatnonzero(lengths < size):  # its one shingle: the whole text
            hv[starts[i]] = zlib.crc32(datas[i])
        _mix(hv)
        first = 0
        while first < k:  # texts first..last-1: BATCH_SHINGLES shingles or fewer, or one text
            last = max(int(np.searchsorted(ends, starts[first] + BATCH_SHINGLES, "right")), first + 1)
            lo, hi = starts[first], ends[last - 1]
            columns = slice(hi - lo) if hi - lo <= BATCH_SHINGLES else slice(1)
            permuted = np.multiply(self._a_columns[:, columns], hv[lo:hi])
            permuted += self._b_columns[:, columns]
            np.minimum.reduceat(permuted, starts[first:last] - lo, axis=1, out=out[first:last].T)
            first = last
        return out


# Containment is used only between texts of comparable size: at least MIN_CONTAINED (estimated)
# shingles each, the shorter at least CONTAINED_RATIO of the longer. Else Jaccard: a few shingles
# are contained in many texts ("so when do you wanna gym" in a long spam union), and a copy padded
# to 2.5 times its template is mostly padding (and costs the spammer message segments). (0.5:
# padding recall 95.7 % on 150 blasts; 0.4: 96.5 %; no ham paced by the burst step at either.)
MIN_CONTAINED = 20
CONTAINED_RATIO = 0.4


def sizes(sketches: np.ndarray) -> np.ndarray:
    """Estimated distinct shingles of each sketch's text, from its minima alone (k minimum values of
    uniform hashes sum to ~k/n: (k - 1) / sum is unbiased; ~9 % error at 128 permutations)."""
    return (sketches.shape[-1] - 1) / (sketches.astype(np.float64) / 2.0**32).sum(axis=-1)


def containments(sketch: np.ndarray, size: float, others: np.ndarray, other_sizes: np.ndarray) -> np.ndarray:
    """Estimated share of the shorter text's shingles found in the longer, |A & B| / min(|A|, |B|),
    for `sketch` with each sketch of `others` (`other_sizes`: their shingles, shaped as `others`
    less num_perm): |A & B| = J (|A| + |B|) / (1 + J). What a text shares with its cluster's first
    text when either was padded; Jaccard where either is short or the two differ in size by more
    than 2.5 times."""
    jaccard = similarities(sketch, others)
    if len(others) == 0:
        return jaccard
    smaller, larger = np.minimum(other_sizes, size), np.maximum(other_sizes, size)
    contained = np.minimum(1.0, jaccard * (other_sizes + size) / ((1 + jaccard) * smaller))
    return np.where((smaller >= MIN_CONTAINED) & (smaller >= CONTAINED_RATIO * larger), contained, jaccard)


def similarities(sketch: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of `sketch` with each sketch of `others` (shape ... x num_perm)."""
    if len(others) == 0:
        return np.zeros(others.shape[:-1])
    # (a byte per comparison, summed in C: np.count_nonzero with an axis is several times slower)
    return np.add.reduce((others == sketch).view(np.uint8), axis=-1, dtype=np.uint16) / sketch.shape[0]
