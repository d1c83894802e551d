"""What an inbound message says about consent: opt-out, opt-in, help, or nothing, and by which rule.

The law holds a sender to more than one exact keyword. FCC 47 CFR 64.1200(a)(10) (since
11 Apr 2025): "stop", "quit", "end", "revoke", "opt out", "cancel" or "unsubscribe" revoke
consent per se, and so do other words a reasonable person would understand as a request to
revoke. CTIA's Messaging Principles (May 2023) 5.1.3: normal language ("please opt me out")
is acted on, except where a word could cause an unintentional opt-out, and de minimis variances
(case, punctuation) must not matter. So a message is normalised (`normalize`), then the rules
are tried in this order, the first that matches deciding (`classify`):

  opt-out   per_se            the whole message is an opt-out word ("STOP!", "Opt-Out", "ＳＴＯＰ")
            phrase            a curated phrase without a keyword ("no more texts"; "remove me" only
                              alone or about a list)
            unambiguous_word  a word with no other common sense ("how do I unsubscribe")
            request           a word that needs context, used as a request about messages
                              ("please stop texting me", "stop please"), within one clause
  opt-in    per_se_opt_in     the whole message is an opt-in word ("START", "unstop")
  help      help              the whole message is a help word ("HELP", "info?")
  none      negated           an opt-out word under a negation ("please don't stop the reminders")
            other_sense       an opt-out word in another sense ("I will stop by at noon")
            none              nothing about consent

`negated` and `other_sense` are reported as ambiguous, so that an operator can review them.
Word lists are per locale: English ships on; Spanish ("es") and French ("fr") are switched on
with the policy's `consent_locales`.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from .reading import as_seen

OPT_OUT, OPT_IN, HELP, NONE = "opt_out", "opt_in", "help", "none"
AMBIGUOUS_RULES = ("negated", "other_sense")
_CLAUSES = re.compile(r"[.,!?;:\n\u3002\uff01\uff1f]+")
_SOFTENERS = frozenset("please pls just really ever".split())

# Every dash and apostrophe maps to ASCII before punctuation is dropped.
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\u2e3a\u2e3b"), "-")
_APOSTROPHES = dict.fromkeys(map(ord, "\u2018\u2019\u201b\u02bc\u02b9\u2032\u0060\u00b4\uff07"), "'")
_JOINED = (
    (re.compile(r"\bopt out\b"), "optout"),
    (re.compile(r"\bopt in\b"), "optin"),
    (re.compile(r"\bstop all\b"), "stopall"),
    (re.compile(r"\bun subscribe\b"), "unsubscribe"),
)


# ASCII text (most messages) needs none of the Unicode steps: one translate table does the rest.
_ASCII = {i: (None if ch in "'`" else ch if ch.isalnum() else " ") for i, ch in ((i, chr(i)) for i in range(128))}


def _fold(text: str) -> str:
    """Punctuation, symbols and separators of a text already as seen, before whitespace is collapsed."""
    text = text.translate(_DASHES).translate(_APOSTROPHES)
    return "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text if ch != "'")


def normalize(text: str) -> str:
    """The text as a reader sees it (models/reading.py: case, look-alike letters, zero-width
    characters, variation selectors, accents, spaced-out letters); dashes and apostrophes to
    ASCII; apostrophes dropped ("don't" -> "dont"), other punctuation, symbols and emoji to
    spaces; one space between words; "opt out", "opt-out" and "optout" (and "stop all" /
    "stopall") one form."""
    text = as_seen(text)
    text = " ".join((text.translate(_ASCII) if text.isascii() else _fold(text)).split())
    if "opt " in text or " all" in text or "un " in text:  # only then can a joined form appear
        for pattern, joined in _JOINED:
            text = pattern.sub(joined, text)
    return text


@dataclass(frozen=True)
class Wording:
    """One locale's words (all normalised)."""

    opt_out: frozenset[str]  # per se when they are the whole message
    unambiguous: frozenset[str]  # opt-out words with no other common sense: a request wherever they stand
    phrases: tuple[str, ...]  # curated opt-out phrases without a keyword
    list_phrases: tuple[
        str, ...
    ]  # phrases that opt out only about a list ("remove me", not "remove me from the class")
    list_words: frozenset[str]  # what such a phrase must be about, if anything follows it
    about_messages: frozenset[str]  # words that make an opt-out word a request about messages
    fillers: frozenset[str]  # words that may surround a bare request ("stop please", "ok stop")
    negations: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


LOCALES: dict[str, Wording] = {
    "en": Wording(
        opt_out=_words("stop stopall unsubscribe cancel end quit optout revoke"),
        unambiguous=_words("stopall unsubscribe optout revoke unsub"),
        phrases=(
            "no more texts",
            "no more messages",
            "no more text",
            "any more texts",
            "any more messages",
            "anymore texts",
            "anymore messages",
            "dont text me",
            "dont message me",
            "dont contact me",
            "do not text me",
            "do not message me",
            "do not contact me",
            "dont send me",
            "do not send me",
            "opt me out",
            "leave me alone",
            "delete my number",
            "lose my number",
        ),
        list_phrases=("remove me", "take me off", "unlist me"),
        list_words=_words(
            "list lists mailing texts messages sms this these your contacts database number numbers here it"
        ),
        about_messages=_words(
            "texting text texts txt txts texted messaging message messages msg msgs sms sending "
            "send receiving getting contacting contact calling emailing notifications alerts "
            "reminders updates spam marketing promos promotions subscription"
        ),
        fillers=_words(
            "please pls plz now ok okay no just thanks thank you thx asap immediately i said so "
            "already right away it me this these them all that us"
        ),
        negations=_words("dont not never wont doesnt didnt cant cannot shouldnt wouldnt without"),
        opt_in=_words("start unstop yes optin subscribe"),
        help=_words("help info"),
    ),
    "es": Wording(
        opt_out=_words("alto parar baja cancelar detener basta"),
        unambiguous=_words("desuscribir desuscribirme"),
        phrases=(
            "darme de baja",
            "dame de baja",
            "no me envien mas",
            "no me manden mas",
            "no mas mensajes",
            "no quiero recibir",
            "quitame de la lista",
            "eliminame de la lista",
        ),
        list_phrases=(),
        list_words=frozenset(),
        about_messages=_words("mensajes mensaje textos texto sms enviar envien mandar"),
        fillers=_words("por favor ya gracias ahora"),
        negations=_words("no nunca"),
        opt_in=_words("inicio comenzar alta"),
        help=_words("ayuda"),
    ),
    "fr": Wording(
        opt_out=_words("arret arreter stop desabonner desinscrire"),
        unambiguous=_words("desabonner desinscrire desabonnement desinscription"),
        phrases=(
            "plus recevoir",
            "plus de messages",
            "plus de sms",
            "desabonnez moi",
            "desinscrivez moi",
            "menvoyez plus",
            "menvoyez pas",
        ),
        list_phrases=("retirez moi",),
        list_words=_words("liste listes messages sms"),
        about_messages=_words("messages message sms textos envoyer envois envoi"),
        fillers=_words("svp merci sil vous plait maintenant moi"),
        negations=_words("pas jamais"),
        opt_in=_words("commencer demarrer"),
        help=_words("aide"),
    ),
}


@dataclass(frozen=True)
class ConsentSignal:
    kind: str  # opt_out | opt_in | help | none
    rule: str  # the rule that decided it (see the module docstring)
    matched: str  # the word or phrase that matched ("" for none)
    normalized: str  # the message as the rules read it

    @property
    def ambiguous(self) -> bool:
        return self.rule in AMBIGUOUS_RULES


class ConsentClassifier:
    """The rules over the words of the enabled locales plus the policy's own keywords."""

    def __init__(
        self,
        opt_out_keywords: tuple[str, ...] = (),
        opt_in_keywords: tuple[str, ...] = (),
        help_keywords: tuple[str, ...] = (),
        locales: tuple[str, ...] = ("en",),
    ) -> None:
        unknown = sorted(set(locales) - set(LOCALES))
        if unknown:
            raise ValueError(f"unknown consent locale(s) {', '.join(unknown)}; known: {', '.join(sorted(LOCALES))}")
        chosen = [LOCALES[name] for name in locales]

        def union(field: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
            return frozenset().union(*(getattr(w, field) for w in chosen), (normalize(k) for k in extra))

        # The policy's keyword lists are the English per-se words (configurable); locales add theirs.
        self.opt_out = union("opt_out", opt_out_keywords)
        self.opt_in = union("opt_in", opt_in_keywords) - self.opt_out
        self.help = union("help", help_keywords)
        self.unambiguous = union("unambiguous")
        self.about_messages = union("about_messages")
        self.fillers = union("fillers")
        self.negations = union("negations")
        self.phrases = tuple(sorted({p for w in chosen for p in w.phrases}, key=len, reverse=True))
        self.list_phrases = tuple(sorted({p for w in chosen for p in w.list_phrases}, key=len, reverse=True))
        self.list_words = union("list_words")
        # Each phrase in the order the rules try them, indexed by its first word: a clause is read
        # once, not once per phrase.
        self._phrases = tuple(
            (phrase, tuple(phrase.split()), phrase in self.list_phrases) for phrase in self.phrases + self.list_phrases
        )
        self._phrase_starts: dict[str, list[int]] = {}
        for order, (_, words, _) in enumerate(self._phrases):
            self._phrase_starts.setdefault(words[0], []).append(order)
        # A message none of whose words is one of these cannot match a clause rule (a joined form
        # that a clause boundary splits, "stop. all", is a trigger either way).
        self._triggers = self.opt_out | self.unambiguous | frozenset(self._phrase_starts)

    def classify(self, text: str) -> ConsentSignal:
        norm = normalize(text)

        def signal(kind: str, rule: str, matched: str = "") -> ConsentSignal:
            return ConsentSignal(kind, rule, matched, norm)

        if norm in self.opt_out:
            return signal(OPT_OUT, "per_se", norm)
        # The other opt-out rules read one clause at a time: "When does the sale end? Send me the
        # link" is two requests, and neither is to stop.
        doubt = None
        clauses: list[str] = []
        if not self._triggers.isdisjoint(norm.split()):
            clauses = _CLAUSES.split(text if text.isascii() else unicodedata.normalize("NFKC", text))
        for clause in clauses:
            found = self._clause(normalize(clause).split())
            if found is None:
                continue
            kind, rule, matched = found
            if kind == OPT_OUT:
                return signal(kind, rule, matched)
            doubt = doubt or signal(kind, rule, matched)
        if doubt is not None:
            return doubt
        if norm in self.opt_in:
            return signal(OPT_IN, "per_se_opt_in", norm)
        if norm in self.help:
            return signal(HELP, "help", norm)
        return signal(NONE, "none")

    def _clause(self, words: list[str]) -> tuple[str, str, str] | None:
        """(kind, rule, matched) for one clause's words: an opt-out, a doubt, or None."""
        doubt = None
        for phrase, at, is_list in self._phrases_in(words):
            after = words[at + len(phrase.split()) :]
            if is_list and after and not any(w in self.list_words for w in after[:4]):
                doubt = doubt or (NONE, "other_sense", phrase)  # "take me off the waitlist"
            elif self._negated(words, at):
                doubt = doubt or (NONE, "negated", phrase)
            else:
                return OPT_OUT, "phrase", phrase
        for i, word in enumerate(words):
            if word not in self.opt_out and word not in self.unambiguous:
                continue
            if self._negated(words, i):
                doubt = doubt or (NONE, "negated", word)
            elif word in self.unambiguous:
                return OPT_OUT, "unambiguous_word", word
            elif self._is_request(words, i):
                return OPT_OUT, "request", word
            else:
                doubt = doubt or (NONE, "other_sense", word)
        return doubt

    def _phrases_in(self, words: list[str]) -> list[tuple[str, int, bool]]:
        """(phrase, position of its first occurrence, is a list phrase) of each phrase in the
        clause, in the order the rules try them."""
        first: dict[int, int] = {}
        starts = self._phrase_starts
        for i, word in enumerate(words):
            for order in starts.get(word, ()):
                if order not in first:
                    phrase_words = self._phrases[order][1]
                    if tuple(words[i : i + len(phrase_words)]) == phrase_words:
                        first[order] = i
        return [(self._phrases[order][0], first[order], self._phrases[order][2]) for order in sorted(first)]

    def _negated(self, words: list[str], i: int) -> bool:
        """Is the nearest word before position i (past a "please" or "just") a negation? ("please
        don't stop the reminders"; not "why won't you stop texting me", where it governs "you")."""
        j = i - 1
        while j >= 0 and words[j] in _SOFTENERS:
            j -= 1
        return j >= 0 and words[j] in self.negations

    def _is_request(self, words: list[str], i: int) -> bool:
        """An opt-out word that needs context reads as a request about messages: a word about
        messages follows it closely, or the clause is only opt-out words and fillers."""
        if any(w in self.about_messages for w in words[i + 1 : i + 4]):
            return True
        return all(w in self.opt_out or w in self.fillers for w in words)
