"""Clinician-style verdicts on recorded answers, overriding the automatic scorer where they apply.

The automatic MedQuAD verdict ("a shown sentence cites the gold page") is lenient: an answer made of a
page's template sentences ("The Human Phenotype Ontology provides the following list of signs and
symptoms for X [1]." with no sign named), or one that answers another question than the one asked
(the definition for "what causes X?"), cites the gold page and counts as right. A person read the
answers of one run and wrote a verdict for each, as a clinician would mark it; those verdicts are
files under ``eval/labels/`` (ids, verdict, a reason in our words and a hash of the answer judged,
never the answer text).

A verdict applies to one answer only: the sha1 of the shown sentences' text when it was judged. Under
other settings (a higher support bar hides a sentence) or in another run, the shown answer differs,
the hash does not match, and the automatic verdict stands; :func:`attach` counts both so a report
says how many verdicts were used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from eval import jsonl
from rag.errors import InputError


def answer_sha1(shown: list[dict[str, Any]]) -> str:
    """The hash a verdict is tied to: the shown sentences' text, in order."""
    return hashlib.sha1("\n".join(s["text"] for s in shown).encode("utf-8")).hexdigest()


def load(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """Verdicts by question id from JSON-lines files of ``{"id", "right", "sha1", "why"}`` (one per answer
    judged: a question can have several, for the answers of several runs or a first and a second try)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        if not path.exists():
            raise InputError(f"labels file {path} not found; give a file under eval/labels/")
        for n, lab in jsonl.objects(path, "one verdict object per line"):
            if not isinstance(lab.get("right"), bool) or \
                    not isinstance(lab.get("id"), str) or not isinstance(lab.get("sha1"), str):
                raise InputError(f"{path}:{n}: a verdict needs \"id\" (text), \"right\" (true/false) and \"sha1\"")
            same = [x for x in out.get(lab["id"], []) if x["sha1"] == lab["sha1"]]
            if same and same[0]["right"] != lab["right"]:
                raise InputError(f"{path}:{n}: a second, different verdict for the same answer to {lab['id']}")
            if not same:
                out.setdefault(lab["id"], []).append(lab)
    return out


def attach(rows: list[dict[str, Any]], labels: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Put each row's verdicts on it (``row["labels"]``); counts of rows labelled, rows whose recorded
    answer (first or second try) has a verdict, and labels naming no row of this part."""
    ids = {r["id"] for r in rows}
    matched = 0
    for r in rows:
        labs = labels.get(r["id"])
        if not labs:
            continue
        r["labels"] = labs
        answers = [r, *([r["second_try"]] if r.get("second_try") else [])]
        hashes = {answer_sha1([s for s in a["sentences"] if s["supported"]]) for a in answers if not a["abstained"]}
        matched += any(lab["sha1"] in hashes for lab in labs)
    return {"labelled": sum("labels" in r for r in rows), "match_recorded_answer": matched,
            "unknown_ids": len(set(labels) - ids)}


def override(row: dict[str, Any], shown: list[dict[str, Any]], verdict: dict[str, bool]) -> dict[str, bool]:
    """The person's verdict when it judged exactly this shown answer, else the automatic one."""
    sha1 = answer_sha1(shown)
    lab = next((x for x in row.get("labels", []) if x["sha1"] == sha1), None)
    if lab is None:
        return verdict
    return {"right": bool(lab["right"]), "model_cited": bool(lab["right"]) and verdict["model_cited"],
            "labelled": True}
