"""What a reader sees: one text for all the ways of writing it that look alike.

A spammer makes each copy of a blast differ in code points while it reads the same: Cyrillic and
Greek look-alikes for Latin letters, zero-width characters between letters, accents, letters
spaced out ("S.A.L.E", "F-R-E-E"). `as_seen` undoes all of these, and every rule that compares
texts reads through it: the sketches of burst pacing and of the junk index (models/similarity.py),
the loop guard's digest (models/controls.py) and the consent wording (models/wording.py).

Steps: NFKC (full-width and styled letters), then one precomputed translate table, then casefold:
format and invisible characters (category Cf: zero-width characters, bidi controls, the soft
hyphen; the default-ignorable Hangul fillers) and combining marks (accents, variation selectors)
dropped, emoji and other symbols to spaces, and each non-ASCII letter folded to its prototype in
Unicode TR39's confusables (the `confusable-homoglyphs` package's copy of confusables.txt, pinned
in pyproject.toml: another version of the data could decide a replay differently). Last, runs of
three or more single letters joined by one separator each become one word.

Only non-ASCII letters are folded: an ASCII letter is what it is ("I" and "l" stay apart, and
all-ASCII texts skip the table). A letter of another script that has no Latin look-alike is kept,
so two different Russian or Greek texts stay as different as they were.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

# default-ignorable letters that render as nothing (Unicode's DerivedCoreProperties)
_FILLERS = "\u115f\u1160\u3164\uffa0"
# code points the table covers: the BMP, the supplementary planes of letters and emoji, and the
# variation selectors supplement (beyond these no letter folds: a character there is kept as it is)
_COVERED = (range(0x30000), range(0xE0000, 0xE0200))
# letters spaced out: three or more single letters (or digits) joined by one and the same separator,
# a space or a character that is not a letter, digit or apostrophe with a space either side or not
# ("s a l e", "S.A.L.E", "F-R-E-E", "s . a . l . e"; "F-R-E-E s a l e" is two words)
_SPACED = re.compile(r"(?<![^\W_])[^\W_](?P<sep>\s|\s?(?:[^\w\s']|_)\s?)[^\W_](?:(?P=sep)[^\W_]){1,}(?![^\W_])")
_NOT_ALNUM = re.compile(r"[\W_]+")


def _prototypes() -> dict[str, str]:
    """Each confusable character and its TR39 prototype. The package's data lists, for every
    character, the characters it is confusable with: a source lists its one prototype, a
    prototype lists its sources. A pair listing only each other (either could be the prototype)
    folds to the lower code point."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    out = {}
    for char, homoglyphs in data.items():
        if len(char) != 1 or len(homoglyphs) != 1:
            continue
        target = homoglyphs[0]["c"].replace("\u200e", "")  # (the data wraps right-to-left letters in LRM marks)
        back = data.get(target, ())
        if len(back) == 1 and back[0]["c"].replace("\u200e", "") == char and target > char:
            continue  # the pair's lower code point is the prototype
        out[char] = target
    return out


def _table() -> dict[int, str | None]:
    """The translate table: every covered code point that reads as something else (or nothing)."""
    prototypes = _prototypes()

    def fold(text: str) -> str:
        out = []
        for ch in unicodedata.normalize("NFKD", text):
            category = unicodedata.category(ch)
            if category in ("Cf", "Mn", "Me") or ch in _FILLERS:
                continue
            if category[0] == "S" and not ch.isascii():
                out.append(" ")
            elif category[0] == "L" and not ch.isascii() and ch in prototypes:
                out.append(prototypes[ch])
            else:
                out.append(ch)
        return "".join(out).casefold()

    table: dict[int, str | None] = {}
    for block in _COVERED:
        for code in block:
            ch = chr(code)
            category = unicodedata.category(ch)
            # only these can read as something else: most letters (CJK, Hangul, ...) skip `fold`
            if (
                code < 0x80
                or category in ("Cn", "Cs", "Co")
                or not (
                    category[0] in "CMS"
                    or ch in prototypes
                    or ch in _FILLERS
                    or ch.casefold() != ch
                    or unicodedata.decomposition(ch)
                )
            ):
                continue
            seen = ch
            for _ in range(3):  # a prototype may itself decompose or fold: to a fixed point
                folded = fold(seen)
                if folded == seen:
                    break
                seen = folded
            if seen != ch:
                table[code] = seen or None
    return table


_TABLE = _table()


def _unspace(match: re.Match) -> str:
    return _NOT_ALNUM.sub("", match.group())


# Two rules of an event read its text: a send's sketch and duplicate check, an inbound's consent
# wording and loop guard (a third of the calls over the bench log find the text just read).
@lru_cache(maxsize=16)
def as_seen(text: str) -> str:
    """The text as a reader sees it: casefolded, invisible characters and accents gone, look-alike
    letters folded to their Latin (TR39) prototypes, symbols and emoji as spaces, spaced-out
    letters joined. Whitespace and punctuation are left for each caller to treat."""
    if text.isascii():
        text = text.lower()
    else:
        # the table folds a letter as written, then its lower case ("Β" is B, not the "β" of its lower case)
        text = unicodedata.normalize("NFKC", text).translate(_TABLE).casefold()
    return _SPACED.sub(_unspace, text)
