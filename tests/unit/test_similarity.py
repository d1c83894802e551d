"""similarity.py: normalisation, shingles and MinHash sketches of near-identical texts."""

from __future__ import annotations

import functools
import random
import zlib

import numpy as np
import pytest
from datasketch import MinHash
from hypothesis import given, settings, strategies as st

from bench._common import DATA, load_corpus
from conftest import PARCEL, TEMPLATE, UNRELATED, Harness, established, send
from sendgate.models import similarity
from sendgate.models.reading import as_seen
from sendgate.models.similarity import BATCH_SHINGLES, TEXT_ROWS, Sketcher, normalize, shingles, similarities

VARIANTS = [
    TEMPLATE.format(name="Christopher", num="7", url="http://t.co/xyz"),
    TEMPLATE.format(name="Bo", num="1234567890", url="www.parcels.net/q?id=99"),
    TEMPLATE.format(name="Maximilian", num="55", url="bit.ly/ab12CD"),
]


def jaccard(a: str, b: str, size: int = 4) -> float:
    """Exact Jaccard similarity of the normalised texts' shingle sets (what MinHash estimates)."""
    x, y = shingles(normalize(a), size), shingles(normalize(b), size)
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def sketcher() -> Sketcher:
    return Sketcher()


def sim(sketcher: Sketcher, a: str, b: str) -> float:
    return float(similarities(sketcher.sketch(a), sketcher.sketch(b).reshape(1, -1))[0])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello  BOB,\tcall 0800 123 today", "hello bob call 0 0 today"),
        ("  padded  ", "padded"),
        ("mail A.B+x@Example.co.uk now", "mail e now"),
        ("see https://x.co/a?b=1 and www.shop.com/x", "see u and u"),
        ("visit bit.ly/xYz12 or shop.example.com/sale!", "visit u or u"),
        ("code 12345, amount 9.99", "code 0 amount 0 0"),  # punctuation reads as a space
        ("WIN!!! a *prize*... now~", "win a prize now"),
        ("Ünïcode ÄÖ", "unicode ao"),  # accents are dropped (models/reading.py)
    ],
)
def test_normalize_folds_per_recipient_variation(text, expected):
    assert normalize(text) == expected


def test_template_variants_normalise_to_the_same_text_except_the_name():
    assert normalize(PARCEL).replace("anna", "X") == normalize(VARIANTS[0]).replace("christopher", "X")


def test_shingles_are_byte_ngrams():
    assert shingles("abcdef", 4) == {b"abcd", b"bcde", b"cdef"}
    assert shingles("abcd", 4) == {b"abcd"}
    assert shingles("ab", 4) == {b"ab"}
    assert shingles("", 4) == {b""}
    assert shingles("aaaaaa", 4) == {b"aaaa"}
    assert shingles("é", 1) == {b"\xc3", b"\xa9"}


def test_sketch_shape_and_type(sketcher):
    s = sketcher.sketch(PARCEL)
    assert s.shape == (128,)
    assert s.dtype == np.uint64 or s.dtype == np.uint32
    assert int(s.max()) < 2**32  # affine32 scheme: values fit the stored <u4 form


def test_sketch_is_deterministic_across_sketchers(sketcher):
    # Replays in another process must produce the same sketches: no salted hash, fixed seed.
    assert np.array_equal(sketcher.sketch(PARCEL), Sketcher().sketch(PARCEL))


def test_sketcher_reuse_does_not_leak_previous_text(sketcher):
    first = sketcher.sketch(PARCEL)
    sketcher.sketch(UNRELATED[0])
    assert np.array_equal(sketcher.sketch(PARCEL), first)


def test_texts_that_normalise_alike_have_identical_sketches(sketcher):
    a = "Your code is 1234. Visit https://a.example.com/x or write to help@a.com"
    b = "YOUR   code is 98. visit www.other.net/y or write to someone.else@b.org"
    assert normalize(a) == normalize(b)
    assert np.array_equal(sketcher.sketch(a), sketcher.sketch(b))


@pytest.mark.parametrize("variant", VARIANTS)
def test_template_variants_are_similar(sketcher, variant):
    exact = jaccard(PARCEL, variant)
    assert exact > 0.7
    estimate = sim(sketcher, PARCEL, variant)
    assert estimate >= 0.6
    assert abs(estimate - exact) < 0.15


@pytest.mark.parametrize("other", UNRELATED)
def test_unrelated_texts_are_not_similar(sketcher, other):
    assert jaccard(PARCEL, other) < 0.1
    assert sim(sketcher, PARCEL, other) < 0.2


def test_unrelated_texts_are_not_similar_to_each_other(sketcher):
    for i, a in enumerate(UNRELATED):
        for b in UNRELATED[i + 1 :]:
            assert sim(sketcher, a, b) < 0.2


def test_similarities_against_several_rows(sketcher):
    rows = np.stack([sketcher.sketch(t) for t in (UNRELATED[0], PARCEL, VARIANTS[0])])
    sims = similarities(sketcher.sketch(PARCEL), rows)
    assert sims.shape == (3,)
    assert sims[1] == 1.0
    assert sims[0] < 0.2 and sims[2] >= 0.6


def test_similarities_with_no_rows_is_empty(sketcher):
    assert similarities(sketcher.sketch(PARCEL), np.zeros((0, 128), dtype=np.uint32)).shape == (0,)


def test_shingle_size_and_num_perm_are_honoured():
    small = Sketcher(num_perm=16, shingle_size=2)
    assert small.sketch("hello").shape == (16,)
    # with 2-grams "abab" and "baba" share {ab, ba}: identical sets, identical sketches
    assert np.array_equal(small.sketch("abab"), small.sketch("baba"))


def _datasketch_sketch(text: str, num_perm: int, size: int) -> np.ndarray:
    """The reference: datasketch hashing shingle by shingle (what stored sketches were made with)."""
    minhash = _datasketch_minhash(num_perm)
    minhash.clear()
    minhash.update_batch(shingles(normalize(text), size))
    return minhash.hashvalues.copy()


@functools.cache
def _datasketch_minhash(num_perm: int) -> MinHash:  # (making one draws its permutations: 0.2 ms)
    return MinHash(num_perm=num_perm, seed=1, hashfunc=zlib.crc32, scheme="affine32")


def _normalize_by_definition(text: str) -> str:
    """normalize's definition: every pattern on every text, as str (no shortcut: `normalize` skips
    patterns that cannot match, and folds an ASCII text's bytes by a table)."""
    text = similarity._EMAIL_RE.sub("e", as_seen(text))
    text = similarity._URL_RE.sub("u", text)
    text = similarity._DIGITS_RE.sub("0", similarity._PUNCTUATION_RE.sub(" ", text))
    return " ".join(text.split())


# Texts that reach every branch: shorter than a shingle, control characters and the whitespace only
# str.split knows (\x1c-\x1f), link and address pieces, non-ASCII digits and letters, emoji; and
# texts longer than a per-text tile (TEXT_ROWS) and than a batch's pass (BATCH_SHINGLES).
ALPHABET = "abcdefgh  0123.@/:_!?-*\t\n\x00\x1c\x1f\x7fÄéΩ٣😀"
PIECES = ["www.", "http://", "https://x.co/", ".com", ".co.uk", ".ly ", "a@b.org", "ab.cd.io/x", "£5.99"]


def generated_texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    texts = ["", "a", "abc", "abcd", "abcde", "aaaaaaaaaa", "Ünïcode ÄÖ 😀😀", "é", *VARIANTS, PARCEL, *UNRELATED]
    texts += ["word " * (TEXT_ROWS // 2), "x" * (BATCH_SHINGLES + 7), "ab " * BATCH_SHINGLES]
    for _ in range(count):
        parts = [rng.choice(ALPHABET) if rng.random() < 0.9 else rng.choice(PIECES) for _ in range(rng.randint(0, 60))]
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("num_perm, size", [(128, 4), (64, 3), (256, 5), (16, 1), (32, 2)])
def test_sketches_are_bit_identical_to_datasketch(num_perm, size):
    sketcher = Sketcher(num_perm, size)
    for text in generated_texts(num_perm, 300):
        got = sketcher.sketch(text)
        assert got.dtype == np.uint32 and got.shape == (num_perm,)
        assert np.array_equal(got, _datasketch_sketch(text, num_perm, size)), repr(text)


@pytest.mark.parametrize("num_perm, size", [(128, 4), (64, 3), (16, 1)])
def test_a_batch_sketches_each_text_as_sketch_does(num_perm, size):
    sketcher = Sketcher(num_perm, size)
    texts = generated_texts(size, 600)
    alone = np.stack([sketcher.sketch(t) for t in texts])
    random.Random(size).shuffle(order := list(range(len(texts))))
    for batch in (1, 2, 7, 100, len(texts)):
        for i in range(0, len(texts), batch):
            picked = order[i : i + batch]
            got = sketcher.sketch_many([texts[j] for j in picked])
            assert got.dtype == np.uint32 and got.flags.c_contiguous
            assert np.array_equal(got, alone[picked]), (batch, i)
    assert sketcher.sketch_many([]).shape == (0, num_perm)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(ALPHABET) | st.sampled_from(PIECES) | st.characters(), max_size=60).map("".join))
def test_normalize_is_its_definition(text):
    assert normalize(text) == _normalize_by_definition(text)


@pytest.mark.skipif(not DATA.exists(), reason=f"the SMS corpus is not at {DATA} (shared data, never in the project)")
def test_every_text_of_the_sms_corpus_sketches_as_datasketch_does():
    texts = [text for _, text in load_corpus()]
    sketcher = Sketcher()
    alone = np.stack([sketcher.sketch(t) for t in texts])
    for text, got in zip(texts, alone):
        assert normalize(text) == _normalize_by_definition(text), repr(text)
        assert np.array_equal(got, _datasketch_sketch(text, 128, 4)), repr(text)
    for batch in (10, 500):
        got = np.concatenate([sketcher.sketch_many(texts[i : i + batch]) for i in range(0, len(texts), batch)])
        assert np.array_equal(got, alone)


def test_presketched_texts_are_taken_from_the_batch_and_equal_what_sketch_makes():
    sketcher, fresh = Sketcher(), Sketcher()
    batch = [PARCEL, *VARIANTS, PARCEL]
    sketcher.presketch(batch)
    for text in batch:
        got = sketcher.sketch(text)
        assert np.array_equal(got, fresh.sketch(text))
        assert not got.flags.writeable  # shared by every caller that asks for the text
    assert sketcher.sketch(PARCEL) is sketcher.sketch(PARCEL)
    assert sketcher.sketch(UNRELATED[0]).flags.writeable  # not in the batch: made alone
    sketcher.presketch(UNRELATED[:3])  # the next batch replaces the memo; so few texts are sketched alone
    assert sketcher.sketch(PARCEL) is not sketcher.sketch(PARCEL)
    assert sketcher.sketch(UNRELATED[1]).flags.writeable


def test_presketch_pauses_after_a_batch_whose_texts_were_mostly_not_asked_for():
    sketcher = Sketcher()
    read: list[int] = []

    def texts(batch: int):
        read.append(batch)
        yield from (f"text {batch} {i}" for i in range(10))

    sketcher.presketch(texts(0))
    for i in range(7):  # 7 of 10: it paid
        sketcher.sketch(f"text 0 {i}")
    sketcher.presketch(texts(1))
    sketcher.sketch("text 1 0")  # 1 of 10: it did not
    for batch in range(2, 3 + similarity.PRESKETCH_PAUSE):
        sketcher.presketch(texts(batch))
    assert read == [0, 1, 2 + similarity.PRESKETCH_PAUSE]  # the paused batches' texts were never read
    assert np.array_equal(sketcher.sketch("text 2 0"), Sketcher().sketch("text 2 0"))


def test_presketching_each_batch_of_sends_changes_no_decision():
    """Two gates take the same events in batches; one presketches each batch's send texts."""
    docs = established(conversers=3) + established(sender="S2", conversers=3)
    for at in range(0, 40):  # blasts of a template's variants, a few unrelated texts, over two senders
        text = (VARIANTS + [PARCEL] + list(UNRELATED))[at % 7]
        docs.append(send(f"u{at:02d}", at=at * 5_000, text=text, sender="S1" if at % 3 else "S2"))
    plain, batched = Harness(), Harness()
    plain.feed(*docs)
    taken = 0
    for i in range(0, len(docs), 8):
        batch = docs[i : i + 8]
        batched.gate.sketcher.presketch(d["text"] for d in batch if d["type"] == "send")
        batched.feed(*batch)
        taken += batched.gate.sketcher._taken
    assert taken > 30  # the burst step took its sketches from the batches
    assert batched.records == plain.records
    assert batched.store.tables == plain.store.tables
