"""Clinical-aware text utilities: the BM25 tokenizer and an answer sentence splitter.

The tokenizer keeps what generic tokenizers destroy in clinical text: numbers with
decimals ("1.5", "0.3"), units ("mg/dl", "ml/min/1.73"), comparison-free numbers from
"≥30", and abbreviations ("hfref", "nt-probnp", "cha2ds2-vasc"). A compound token is also
emitted as its parts so "NT-proBNP" matches "proBNP" and "mg/dL" matches "mg".
"""

from __future__ import annotations

import re
import unicodedata

# A token: alphanumerics joined by '.', '/', '-' or '+' when both sides are alphanumeric.
_TOKEN = re.compile(r"[a-z0-9µ]+(?:[./+\-][a-z0-9µ]+)*")
_PLAIN_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have how i if in into is it
    its may might of on or our should so such than that the their them then there these they this those to
    was we were what when where which while who whom why will with would you your""".split()
)


def normalize(text: str) -> str:
    """NFKC (folds ligatures, full-width digits, superscripts like m²→m2) and lower-case."""
    return unicodedata.normalize("NFKC", text).lower()


def _light_stem(tok: str) -> str:
    # Plural folding only: aggressive stemmers mangle drug names and abbreviations.
    if len(tok) > 4 and tok.isalpha():
        if tok.endswith("ies"):
            return tok[:-3] + "y"
        if tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
            return tok[:-1]
    return tok


def tokenize(text: str) -> list[str]:
    """BM25 tokens: lower-cased, stopwords removed, compounds kept and also split."""
    out: list[str] = []
    for m in _TOKEN.finditer(normalize(text)):
        tok = m.group(0).strip(".")
        if not tok or tok in STOPWORDS:
            continue
        out.append(_light_stem(tok))
        if not _PLAIN_NUMBER.match(tok) and re.search(r"[./+\-]", tok):
            for part in re.split(r"[./+\-]", tok):
                if part and part not in STOPWORDS and part != tok:
                    out.append(_light_stem(part))
    return out


# Sentence boundary: end punctuation (optionally followed by citation markers) then space and
# an upper-case letter/digit/bullet. Abbreviations common in clinical prose are protected.
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|vs|etc|approx|dr|mr|mrs|ms|fig|no|st)\.$", re.I)
_BOUNDARY = re.compile(r"(?<=[.!?])((?:\s*\[\d+(?:\s*,\s*\d+)*\])*)\s+(?=[A-Z0-9\-•(])")


def split_sentences(text: str) -> list[str]:
    """Split an answer into sentences, keeping trailing citation markers with their sentence."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        start = 0
        for m in _BOUNDARY.finditer(line):
            head = line[start:m.start()]
            if _ABBREV.search(head):
                continue
            sentences.append((head + m.group(1)).strip())
            start = m.end()
        tail = line[start:].strip()
        if tail:
            sentences.append(tail)
    return [s for s in sentences if re.search(r"\w", s)]
