"""Checks on what a user types (questions, patient ids), before any model or index is loaded.

A patient id scopes which records a query may see, so it is never guessed at: an empty id is
refused (it would otherwise read as "no patient", an unscoped query), and an id with spaces,
control characters or line breaks is refused without being echoed (a newline in an error
line forges a second log line).
"""

from __future__ import annotations

import re
import unicodedata

from rag.errors import InputError

MAX_PATIENT_ID_CHARS = 64
_PATIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")


def _not_utf8(text: str) -> bool:
    """True for text that cannot be encoded (lone surrogates: bytes that were not UTF-8 on the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def clean_question(question: str, limit: int) -> str:
    """The question with its whitespace collapsed; raise :class:`InputError` if it cannot be asked."""
    if not isinstance(question, str):
        raise InputError("the question must be text; pass it as a string")
    if _not_utf8(question):
        raise InputError("the question is not valid UTF-8 text; set the terminal to UTF-8 (e.g. LANG=C.UTF-8) and "
                         "ask again")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in question):
        raise InputError("the question contains control characters; ask it as plain text")
    q = " ".join(question.split())
    if not q:
        raise InputError("the question is empty; ask e.g. `python app.py query \"What reduces mortality in HFrEF?\"`")
    if len(q) > limit:
        raise InputError(f"the question is {len(q)} characters; the limit is {limit} (query.max_question_chars): "
                         "shorten it")
    return q


def clean_patient_id(patient_id: str | None) -> str | None:
    """None for no patient; otherwise the id, which must be one token of letters, digits and ``._:/-``."""
    if patient_id is None:
        return None
    if not isinstance(patient_id, str):
        raise InputError("--patient must be text, e.g. P001")
    pid = patient_id.strip()
    if not pid:
        raise InputError("--patient is empty; pass a patient id such as P001, or leave --patient out to ask "
                         "about guidelines only")
    if _not_utf8(pid) or len(pid) > MAX_PATIENT_ID_CHARS or not _PATIENT_ID.fullmatch(pid):
        raise InputError(f"--patient is not a patient id (one word of at most {MAX_PATIENT_ID_CHARS} letters, digits "
                         "and . _ : / -, with no spaces or line breaks); `python app.py index status` lists the "
                         "patients")
    return pid
