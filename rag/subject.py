"""Is a source about the subject asked, or about another variant of it?

Retrieval finds the nearest page, and when the asked page is not indexed the nearest is often a
sibling: "Aicardi-Goutieres syndrome type 1" for a question about type 4, "mitochondrial complex III
deficiency" for complex II, the autosomal dominant form for the recessive one, the childhood cancer
for the adult one. The sibling's text reads like an answer, so the answerability model and the claim
check pass it; a clinician would not. The check here compares the question with each shown source's
**title** (what the page says it is about):

- *compatible*: every content word of the title is in the question and they name no different variant;
- *sibling*: every content word of the title is in the question, but the title names a variant the
  question does not and the question names one the title does not (a type/class number or letter code,
  a roman numeral, or one of a set of exclusive qualifiers such as dominant/recessive, adult/childhood);
- otherwise *unrelated* (the title's words are not all in the question: most guideline sections,
  patient records, general pages).

:func:`other_variant` is true when a shown source is a sibling and none is compatible: the sources are
about another variant of what was asked. Titles only; no learned model, no corpus-specific list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rag.text import STOPWORDS, normalize

_WORD = re.compile(r"[a-z0-9]+")
# Words after which a short code is a variant ("type 2h", "complex i", "group b", "class iii").
_VARIANT_WORDS = frozenset("type types subtype class group grade stage phase complex form factor level".split())
_ROMAN = frozenset("ii iii iv vi vii viii ix xi xii xiii xiv xv".split())  # unambiguous without a variant word
_CODE = re.compile(r"^\d{1,2}[a-z]?$")  # "4", "2h", "1a": not years or doses (three digits and more)
_DATE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b")  # a note's date is not a variant
# Exclusive qualifiers: a page about one is not about another of the same group.
_EXCLUSIVE = (
    frozenset({"dominant", "recessive"}),
    frozenset({"acute", "chronic", "subacute"}),
    frozenset({"adult", "childhood", "pediatric", "paediatric", "infantile", "juvenile", "neonatal"}),
    frozenset({"primary", "secondary"}),
    frozenset({"benign", "malignant"}),
    frozenset({"congenital", "acquired"}),
)
_QUALIFIERS = frozenset().union(*_EXCLUSIVE)


@dataclass(frozen=True)
class Subject:
    """A text's content words and the variants it names."""

    words: frozenset[str]
    variants: frozenset[str]  # codes ("4", "2h", "ii", "type:b")
    qualifiers: frozenset[str]


def _stem(word: str) -> str:
    # Plural folding only (as the BM25 tokenizer does), so "syndromes" matches "syndrome".
    if len(word) > 4 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def parse(text: str) -> Subject:
    """The words and variants of a question or a title (``normalize``d, split on non-alphanumerics)."""
    tokens = _WORD.findall(_DATE.sub(" ", normalize(text)))
    words: set[str] = set()
    variants: set[str] = set()
    qualifiers: set[str] = set()
    for i, tok in enumerate(tokens):
        after_variant_word = i > 0 and tokens[i - 1] in _VARIANT_WORDS
        if _CODE.match(tok) or tok in _ROMAN or (after_variant_word and len(tok) == 1):
            variants.add(tok)
        elif tok in _QUALIFIERS:
            qualifiers.add(tok)
        elif tok not in STOPWORDS and not tok.isdigit():
            words.add(_stem(tok))
    return Subject(frozenset(words), frozenset(variants), frozenset(qualifiers))


def _conflict(question: Subject, title: Subject) -> bool:
    if question.variants - title.variants and title.variants - question.variants:
        return True
    for group in _EXCLUSIVE:
        asked, named = question.qualifiers & group, title.qualifiers & group
        if asked - named and named - asked:
            return True
    return False


def relation(question: str | Subject, title: str) -> str:
    """``compatible``, ``sibling`` or ``unrelated`` (module docstring)."""
    q = parse(question) if isinstance(question, str) else question
    t = parse(title)
    if not t.words or not t.words <= q.words:
        return "unrelated"
    return "sibling" if _conflict(q, t) else "compatible"


def other_variant(question: str, titles: Iterable[str]) -> str | None:
    """The title of a shown source about another variant of the asked subject, when no shown source is
    about the asked one; else None."""
    q = parse(question)
    sibling = None
    for title in titles:
        r = relation(q, title)
        if r == "compatible":
            return None
        if r == "sibling" and sibling is None:
            sibling = title
    return sibling
