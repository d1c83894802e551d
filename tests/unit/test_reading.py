"""reading.py: one text for every way of writing it that reads the same, and only for those."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sendgate.models.controls import inbound_digest
from sendgate.models.reading import as_seen
from sendgate.models.similarity import Sketcher, normalize, similarities
from sendgate.models.wording import OPT_OUT, ConsentClassifier

SALE = "MEGA SALE at Ace Shop! Take 50% off every Pick of the Season today"


@pytest.mark.parametrize(
    "disguised",
    [
        # Cyrillic and Greek look-alikes, upper and lower case
        "МЕGА ЅАLЕ аt Асе Ѕhор! Таkе 50% оff еvеrу Рісk оf thе Ѕеаѕоn tоdау",
        "ΜΕGΑ SΑLΕ at Αce Shop! Τake 50% off every Ρick of the Seasοn today",
        # zero-width characters, word joiner, BOM, soft hyphen, bidi controls, variation selectors
        "ME\u200bGA SA\u200cLE at A\u200dce Sh\u2060op! Ta\ufeffke 50% of\u00adf ev\u202aery\u202c Pick of the Sea\ufe0fson today",
        # accents and other combining marks
        "MÉGÀ SÄLE at Âcé Shöp! Take 50% off every Pi\u0301ck of the Season today",
        # full-width and mathematical letters
        "ＭＥＧＡ 𝐒𝐀𝐋𝐄 at Ace Shop! Take 50% off every Pick of the Season today",
        # everything at once
        "М\u200bΕGА ЅÀLΕ\u00ad аt Асе Ѕhор! Таkе 50% оff еvеrу Рісk оf thе Ѕеаѕоn tоdау",
    ],
)
def test_look_alike_invisible_and_accented_copies_read_as_the_original(disguised):
    assert as_seen(disguised) == as_seen(SALE) == SALE.lower()


@pytest.mark.parametrize(
    "spaced, seen",
    [
        ("S.A.L.E today", "sale today"),
        ("s a l e today", "sale today"),
        ("F-R-E-E entry", "free entry"),
        ("S . A . L . E!", "sale!"),
        ("W_I_N now", "win now"),
        ("S🔥A🔥L🔥E", "sale"),  # emoji read as spaces, then the spaced-out letters as one word
        ("F-R-E-E s a l e", "free sale"),  # a run keeps one separator: two spaced words stay two words
    ],
)
def test_spaced_out_letters_read_as_one_word(spaced, seen):
    assert as_seen(spaced) == seen


@pytest.mark.parametrize("text", ["I'm a big fan, r u ok", "e.g. a t-shirt", "a b", "U and I"])
def test_ordinary_single_letters_are_left_alone(text):
    assert as_seen(text) == text.lower()


def test_ascii_letters_are_never_folded():
    # TR39 makes "I" and "1" look-alikes of "l", but an ASCII letter is what it is
    assert as_seen("Il1 O0") == "il1 o0"


def test_emoji_and_symbols_read_as_spaces():
    assert as_seen("sale🎉 now👍🏽 ✅ok") == "sale  now    ok"  # (the skin tone is a symbol of its own)


@pytest.fixture(scope="module")
def sketcher() -> Sketcher:
    return Sketcher()


def sim(sketcher: Sketcher, a: str, b: str) -> float:
    return float(similarities(sketcher.sketch(a), sketcher.sketch(b).reshape(1, -1))[0])


@pytest.mark.parametrize(
    "a, b",
    [
        (
            "Привет! Завтра в 10 встреча в офисе, не опаздывай пожалуйста",
            "Скидка 50% на все товары только сегодня, заходите в наш магазин",
        ),
        ("Ваш заказ доставлен, спасибо что выбрали нас", "Ваш платёж отклонён, проверьте данные карты"),
        (
            "Καλημέρα! Η συνάντηση μεταφέρθηκε για την Τρίτη στις δέκα",
            "Μεγάλη έκπτωση σε όλα τα προϊόντα μόνο για σήμερα",
        ),
        ("Η παραγγελία σας παραδόθηκε, ευχαριστούμε", "Η πληρωμή σας απορρίφθηκε, ελέγξτε την κάρτα"),
    ],
)
def test_different_texts_in_other_scripts_stay_apart(sketcher, a, b):
    assert as_seen(a) != as_seen(b)
    assert sim(sketcher, a, b) < 0.4


def test_a_text_in_another_script_still_matches_its_own_copies(sketcher):
    text = "Скидка 50% на все товары только сегодня, заходите в наш магазин"
    assert sim(sketcher, text, text.replace("50", "70").replace(" магазин", " магазин\u200b!")) >= 0.8
    assert sim(sketcher, text, "Привет! Как дела?") < 0.2


def test_a_cyrillic_text_does_not_merge_with_a_latin_one(sketcher):
    assert sim(sketcher, "Скидка на все товары только сегодня", "Big discount on everything today only") < 0.1


def test_every_rule_that_compares_texts_reads_through_it():
    disguised = "ЅТОР"  # Cyrillic S, T, O, P
    assert ConsentClassifier().classify(disguised).kind == OPT_OUT
    assert ConsentClassifier().classify("S.T.O.P").kind == OPT_OUT
    assert inbound_digest("Are you there?") == inbound_digest("Аrе уоu thеrе\u200b?")
    assert normalize("ЅАLЕ\u200b") == "sale"


def test_as_seen_is_the_same_in_every_process():
    # the table is built at import; replay in another process must fold exactly as live did
    texts = ["МЕGА ЅАLЕ\u200b", "ΣΑΣ σας Β β", "F-R-E-E", "Ünïcode ＳＴＯＰ 𝐒"]
    code = (
        "import sys, json; from sendgate.models.reading import as_seen; "
        "print(json.dumps([as_seen(t) for t in json.loads(sys.argv[1])]))"
    )
    import json

    out = subprocess.run([sys.executable, "-c", code, json.dumps(texts)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [as_seen(t) for t in texts]
    sk = Sketcher()
    assert np.array_equal(sk.sketch(texts[0]), Sketcher().sketch(texts[0]))
