"""Strict key-fact matching for the demo questions: every required fact, in the words of the answer.

A demo question lists ``required`` fact groups (``eval/questions/README.md``): the answer is right only
when every group is stated, each group being satisfied by any one of its alternative phrasings. The
old check took any one key fact as enough ("HFrEF GDMT classes?" passed with one class named) and
matched literally ("serum potassium is below 5.0" missed "potassium below 5.0").

Matching works on normalised tokens: lower case, dashes and " to " ranges alike, comparison symbols
spelled out ("<" and "less than" -> "below"), numbers without trailing zeros ("5.0" -> "5"), words
of five letters or more without a plain suffix ("withholding" -> "withhold"). A fact
matches when its tokens appear in order with at most ``GAP`` other tokens between consecutive ones,
so "potassium below 5.0" matches "serum potassium is below 5.0 mmol/L" and "2-14 days" matches
"between 2 and 14 days", but "2 g" does not match "12 g".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

GAP = 3  # other tokens allowed between two consecutive fact tokens

# Longest first: "less than or equal to" must win over "less than".
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"less than or equal to|<=|≤|=<", " at most "),
    (r"greater than or equal to|>=|≥|=>", " at least "),
    (r"less than|lower than|under|<", " below "),
    (r"greater than|higher than|more than|over|>", " above "),
    (r"×|\*", " x "),
    (r"μ", "µ"),
)
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-zµ]+|%")


def _number(tok: str) -> str:
    if "." in tok and tok[0].isdigit():
        return tok.rstrip("0").rstrip(".")
    if tok.isalpha() and len(tok) > 4:  # a light stem: "continued"/"continuing" state "continue"
        for suffix in ("ing", "ed", "es", "s", "e"):
            if tok.endswith(suffix):
                return tok[: -len(suffix)]
    return tok


def tokens(text: str) -> list[str]:
    """The normalised tokens of ``text`` (see the module docstring)."""
    t = text.lower().replace("–", "-").replace("—", "-")
    for pattern, repl in _PHRASES:
        t = re.sub(rf"(?<![a-z])(?:{pattern})(?![a-z])" if pattern[0].isalpha() else pattern, repl, t)
    return [_number(m.group()) for m in _TOKEN.finditer(t)]


def _matches_at(fact: Sequence[str], words: Sequence[str], start: int) -> bool:
    pos = start
    for tok in fact[1:]:
        nxt = next((j for j in range(pos + 1, min(len(words), pos + GAP + 2)) if words[j] == tok), None)
        if nxt is None:
            return False
        pos = nxt
    return True


def states(fact: str, text: str) -> bool:
    """Whether ``text`` states ``fact`` (its tokens in order, small gaps allowed)."""
    f, words = tokens(fact), tokens(text)
    if not f:
        return False
    return any(w == f[0] and _matches_at(f, words, i) for i, w in enumerate(words))


def missing_groups(required: Sequence[Sequence[str]], text: str) -> list[list[str]]:
    """The required groups that ``text`` states in none of their alternatives."""
    return [list(group) for group in required if not any(states(alt, text) for alt in group)]
