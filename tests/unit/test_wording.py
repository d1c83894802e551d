"""wording.py: what an inbound says about consent, in the words people use (FCC 64.1200(a)(10),
CTIA 5.1.3). Each phrasing names the rule it must hit, so a change of class shows up here."""

from __future__ import annotations

import pytest

from sendgate.models.policy import Policy
import random

from sendgate.models.wording import _ASCII, ConsentClassifier, _fold, normalize

P = Policy()
EN = ConsentClassifier(P.opt_out_keywords, P.opt_in_keywords, P.help_keywords)
ALL = ConsentClassifier(P.opt_out_keywords, P.opt_in_keywords, P.help_keywords, ("en", "es", "fr"))

OPT_OUT = [
    # per se: the whole message is a listed word, whatever its case, punctuation or width
    ("STOP", "per_se"),
    ("stop", "per_se"),
    ("Stop.", "per_se"),
    ("STOP!", "per_se"),
    ("  Stop ", "per_se"),
    ("stop!!!", "per_se"),
    ("'stop'", "per_se"),
    ("«STOP»", "per_se"),
    ("ＳＴＯＰ", "per_se"),
    ("S\u200bTOP", "per_se"),
    ("STOP\ufe0f", "per_se"),
    ("stop 🛑", "per_se"),
    ("🛑 STOP 🛑", "per_se"),
    ("Stop?", "per_se"),
    ("STOPALL", "per_se"),
    ("stop all", "per_se"),
    ("Stop All", "per_se"),
    ("UNSUBSCRIBE", "per_se"),
    ("Unsubscribe.", "per_se"),
    ("un-subscribe", "per_se"),
    ("cancel", "per_se"),
    ("CANCEL!", "per_se"),
    ("end", "per_se"),
    ("END.", "per_se"),
    ("quit", "per_se"),
    ("Quit!", "per_se"),
    ("revoke", "per_se"),
    ("REVOKE", "per_se"),
    ("optout", "per_se"),
    ("opt out", "per_se"),
    ("Opt-Out", "per_se"),
    ("OPT–OUT", "per_se"),
    ("opt\u2011out", "per_se"),
    ("Opt out.", "per_se"),
    # curated phrases without a listed word
    ("remove me", "phrase"),
    ("Remove me from this list", "phrase"),
    ("please remove me", "phrase"),
    ("take me off your list", "phrase"),
    ("Take me off", "phrase"),
    ("no more texts", "phrase"),
    ("No more messages please", "phrase"),
    ("don't text me", "phrase"),
    ("Don’t text me again", "phrase"),
    ("do not text me", "phrase"),
    ("dont message me", "phrase"),
    ("do not contact me", "phrase"),
    ("please opt me out", "phrase"),
    ("opt me out", "phrase"),
    ("leave me alone", "phrase"),
    ("delete my number", "phrase"),
    ("lose my number", "phrase"),
    ("don't send me these", "phrase"),
    # words with no other common sense, wherever they stand
    ("unsubscribe me", "unambiguous_word"),
    ("How do I unsubscribe?", "unambiguous_word"),
    ("I want to unsubscribe", "unambiguous_word"),
    ("please unsubscribe me from this", "unambiguous_word"),
    ("stop all messages", "unambiguous_word"),
    ("I want to opt out", "unambiguous_word"),
    ("I'd like to opt-out of these", "unambiguous_word"),
    ("revoke my consent", "unambiguous_word"),
    ("i revoke consent", "unambiguous_word"),
    ("unsub", "unambiguous_word"),
    # a word that needs context, used as a request about messages
    ("Please stop texting me", "request"),
    ("stop texting me", "request"),
    ("STOP TEXTING ME!!!", "request"),
    ("stop sending me these", "request"),
    ("Stop the texts", "request"),
    ("stop messaging me", "request"),
    ("stop it", "request"),
    ("stop please", "request"),
    ("please stop", "request"),
    ("ok stop", "request"),
    ("STOP STOP", "request"),
    ("stop stop stop", "request"),
    ("I said stop", "request"),
    ("just stop", "request"),
    ("stop now", "request"),
    ("Stop, thanks", "request"),
    ("quit texting me", "request"),
    ("Quit messaging me", "request"),
    ("cancel my subscription", "request"),
    ("cancel these texts", "request"),
    ("end these messages", "request"),
    ("end all texts", "request"),
    ("stop the reminders", "request"),
    ("stop sending marketing", "request"),
    ("stop contacting me", "request"),
    ("no, stop", "request"),
    ("i don't know, just stop texting me", "request"),
    ("stop the spam", "request"),
    ("cancel alerts", "request"),
    ("stop notifications", "request"),
    ("Stop receiving these", "request"),
    # found in review: the negation governs something else, or the request is its own sentence
    ("Not interested, stop", "request"),
    ("Not interested. Stop texting me", "request"),
    ("Why won't you stop texting me?", "request"),
    ("Why can't I unsubscribe?", "unambiguous_word"),
    ("I don't want any more texts", "phrase"),
]

NOT_OPT_OUT = [
    # an opt-out word in another sense
    ("I will stop by at noon", "other_sense"),
    ("can I cancel and rebook", "other_sense"),
    ("see you at the end of the day", "other_sense"),
    ("I quit my job today", "other_sense"),
    ("cancel my order", "other_sense"),
    ("the end", "other_sense"),
    ("I'll stop by later", "other_sense"),
    ("what time does the sale end", "other_sense"),
    ("can I cancel my appointment", "other_sense"),
    ("the bus stop is closed", "other_sense"),
    ("where do I stop the car", "other_sense"),
    ("weekend plans: end of season sale?", "other_sense"),
    ("I didn't say stop", "other_sense"),
    # found in review: a pronoun, a question, a second sentence or a class list is no request to stop
    ("Can you cancel it?", "other_sense"),
    ("Please cancel this appointment", "other_sense"),
    ("cancel this order", "other_sense"),
    ("When does the sale end? Send me the link", "other_sense"),
    ("end of this month works", "other_sense"),
    ("Is there a bus stop near me?", "other_sense"),
    ("I'll stop by, text me when ready", "other_sense"),
    ("please remove me from the 3pm class", "other_sense"),
    ("take me off the waitlist", "other_sense"),
    # negated
    ("please don't stop the reminders", "negated"),
    ("Please don't stop sending me these", "negated"),
    ("do not stop", "negated"),
    ("don't cancel my booking", "negated"),
    ("never stop", "negated"),
    ("don't unsubscribe me", "negated"),
    ("please don't remove me", "negated"),
    # nothing about consent
    ("stopped", "none"),
    ("weekend", "none"),
    ("STOPP", "none"),
    ("unstoppable", "none"),
    ("endless", "none"),
    ("hi", "none"),
    ("what is my balance?", "none"),
    ("thanks!", "none"),
    ("", "none"),
    ("🙂", "none"),
    ("cancellation policy?", "none"),
    ("quitting time", "none"),
]

OPT_IN = [
    ("START", "per_se_opt_in"),
    ("start", "per_se_opt_in"),
    ("Start.", "per_se_opt_in"),
    ("UNSTOP", "per_se_opt_in"),
    ("yes", "per_se_opt_in"),
    ("YES!", "per_se_opt_in"),
    ("opt in", "per_se_opt_in"),
    ("Opt-In", "per_se_opt_in"),
    ("subscribe", "per_se_opt_in"),
]

HELP = [("HELP", "help"), ("help", "help"), ("Help?", "help"), ("INFO", "help"), ("info.", "help")]


@pytest.mark.parametrize("text, rule", OPT_OUT)
def test_opt_outs(text, rule):
    said = EN.classify(text)
    assert (said.kind, said.rule) == ("opt_out", rule), said


@pytest.mark.parametrize("text, rule", NOT_OPT_OUT)
def test_not_opt_outs(text, rule):
    said = EN.classify(text)
    assert (said.kind, said.rule) == ("none", rule), said
    assert said.ambiguous is (rule in ("negated", "other_sense"))


@pytest.mark.parametrize("text, rule", OPT_IN)
def test_opt_ins(text, rule):
    assert (EN.classify(text).kind, EN.classify(text).rule) == ("opt_in", rule)


@pytest.mark.parametrize("text, rule", HELP)
def test_help(text, rule):
    assert (EN.classify(text).kind, EN.classify(text).rule) == ("help", rule)


def test_there_are_over_a_hundred_phrasings():
    assert len(OPT_OUT) + len(NOT_OPT_OUT) + len(OPT_IN) + len(HELP) >= 100


@pytest.mark.parametrize(
    "text, kind, rule",
    [
        ("ALTO", "opt_out", "per_se"),
        ("Baja", "opt_out", "per_se"),
        ("darme de baja", "opt_out", "phrase"),
        ("No me envíen más mensajes", "opt_out", "phrase"),
        ("parar mensajes", "opt_out", "request"),
        ("AYUDA", "help", "help"),
        ("inicio", "opt_in", "per_se_opt_in"),
        ("ARRÊT", "opt_out", "per_se"),
        ("Désabonner", "opt_out", "per_se"),
        ("je veux me désinscrire", "opt_out", "unambiguous_word"),
        ("ne plus recevoir de SMS", "opt_out", "phrase"),
        ("aide", "help", "help"),
        ("Ne m'envoyez plus de messages", "opt_out", "phrase"),
        ("Je ne veux plus de messages", "opt_out", "phrase"),
        ("Je ne veux plus recevoir de SMS", "opt_out", "phrase"),
        ("No, no me envíen más", "opt_out", "phrase"),
        ("Estoy en la planta baja", "none", "other_sense"),
        ("¿Hay descuento para todos?", "none", "none"),
        ("Lo necesito para mas tarde", "none", "none"),
    ],
)
def test_spanish_and_french_when_switched_on(text, kind, rule):
    said = ALL.classify(text)
    assert (said.kind, said.rule) == (kind, rule), said
    assert EN.classify(text).kind == "none"  # off by default


def test_the_policy_keywords_stay_per_se_words():
    custom = ConsentClassifier(("STOP", "HALT"), ("START",), ("HELP",))
    assert (custom.classify("Halt!").kind, custom.classify("Halt!").rule) == ("opt_out", "per_se")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Opt–Out!!", "optout"),
        ("Don’t  TEXT\u200b me", "dont text me"),
        ("ＳＴＯＰ", "stop"),
        ("Arrêt", "arret"),
        ("stop all 🛑", "stopall"),
        ("a-b—c", "a b c"),
        ("  ", ""),
    ],
)
def test_normalisation(text, expected):
    assert normalize(text) == expected


def test_the_ascii_shortcut_folds_every_ascii_character_as_the_unicode_path_does():
    for code in range(128):
        ch = chr(code)
        assert " ".join(ch.translate(_ASCII).split()) == " ".join(_fold(ch).split()), repr(ch)


def test_messages_without_a_trigger_word_skip_the_clause_rules_with_the_same_result():
    # The pre-filter (no opt-out word, unambiguous word or phrase start in the message) must never
    # hide a clause rule: compare with the clause rules run on every clause, over random messages.
    rng = random.Random(11)
    pieces = (
        "stop",
        "opt",
        "out",
        "in",
        "all",
        "un",
        "subscribe",
        "please",
        "don't",
        "no",
        "more",
        "texts",
        "remove",
        "me",
        "from",
        "list",
        "off",
        "take",
        "\u2013",
        "\u2019",
        "\uff33\uff34\uff2f\uff30",
        ".",
        ",",
        "?",
        "!",
        "end",
        "quit",
        "the",
        "sale",
        "ok",
        "texting",
        "leave",
        "alone",
        "\u00e9",
        "\u200b",
    )
    classifier = ConsentClassifier(locales=("en", "es", "fr"))
    every_clause = ConsentClassifier(locales=("en", "es", "fr"))
    every_clause._triggers = _Everything()
    for _ in range(3000):
        text = rng.choice(("", " ")).join(rng.choice(pieces) for _ in range(rng.randint(1, 7)))
        assert classifier.classify(text) == every_clause.classify(text), text


class _Everything(frozenset):
    def isdisjoint(self, other) -> bool:  # noqa: ARG002 - every word is a trigger
        return False
