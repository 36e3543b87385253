"""Negation cues: the one list every rule that reads "no diabetes" or "denies smoking" uses.

ConText-style pre-negation triggers (Harkema et al. 2009): a cue before a term negates it within
its clause; where the clause ends is each caller's rule. Used by the risk-input reader
(:mod:`rag.hf_extract`), the record-fact check on answer sentences (:mod:`rag.cite`), the check of
a generated risk explanation (:mod:`rag.risk`) and the evaluation scorers (``eval/patient_records.py``,
``eval/hf_working.py``). One list, so a cue added for one is seen by all of them.
"""

from __future__ import annotations

import re

# Words and phrases; "n't" (doesn't, hasn't) is matched as a suffix. "non" also catches "non-smoker".
CUES = ("no", "not", "without", "denies", "denied", "deny", "never", "neither", "nor", "non", "nil", "lacks",
        "negative for", "free of", "absence of")
# The cue alternatives as a pattern, for rules that embed them in a larger expression.
CUE_PATTERN = r"\b(?:" + "|".join(c.replace(" ", r"\s+") for c in CUES) + r")\b|n't\b"
NEGATION = re.compile(CUE_PATTERN, re.I)

__all__ = ["CUES", "CUE_PATTERN", "NEGATION"]
