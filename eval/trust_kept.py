"""Trust outcomes that outlive the machine: ids and numbers only, committed under ``eval/results/``.

A run's records (``.cds/eval/...``) hold the answers and the sources' text. They stay out of git (the
repository holds no text copied from the corpora) and are lost with a fresh machine, so a part that
needs more CPU than one session has (the ``ece`` part: ~9 h on 2 cores) could never finish. What the
calibration report needs of each question is kept instead: whether the product answered, its confidence,
and whether the answer was right (a person's verdict where one matches the shown answer, else the strict
scorer), with a **fingerprint** of everything that decides them (the models, the adapters by their weights (not
their cards), the retrieval, verifier and generator settings, the replayed settings with the calibration itself,
and the indexes' documents). ``eval trust run --skip-kept FILE`` asks only the questions not kept under the
current fingerprint; ``eval trust keep`` adds a run's outcomes; ``python -m eval.trust_ece`` pools them.
A change to any of those inputs changes the fingerprint, and outcomes under another fingerprint are
never pooled (they are kept in the file, for the record, until replaced).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from eval import jsonl, trust


def index_digest(manifest: dict[str, Any]) -> str:
    """The documents an index version holds (by content hash), its embedder and chunking: not its name or date."""
    docs = sorted((k, str(v.get("hash"))) for k, v in manifest.get("documents", {}).items())
    body = {"documents": docs, "embedder": manifest.get("embedder"), "chunking": manifest.get("chunking")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


# Options added after outcomes were first kept, with the value that reproduces the behaviour before them. At that
# value an option is left out of the fingerprint, so outcomes kept before it existed stay valid (a fresh machine
# cannot re-keep them without asking again: hours of CPU). Each new switch of the verifier or of the replayed
# settings adds itself here with its old-behaviour value; any other value changes the fingerprint.
NEUTRAL: dict[str, Any] = {"verbatim_strict": False, "unseen_terms": False, "novel_terms": False, "demo_point": None,
                          "expand_question": False, "answerability_model": None}


def _without_neutral(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not (k in NEUTRAL and v == NEUTRAL[k])}


def _without_provenance(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings less the calibration's ``gate_verifier`` record: it says what the file was fitted with (the
    adapters enter the fingerprint by their weights anyway); adding it to an older file changes no outcome."""
    calib = settings.get("calibration")
    if not isinstance(calib, dict) or "gate_verifier" not in calib:
        return settings
    return {**settings, "calibration": {k: v for k, v in calib.items() if k != "gate_verifier"}}


def fingerprint(config: Any, settings: dict[str, Any], manifests: Iterable[dict[str, Any]]) -> str:
    """What decides a question's outcome under ``config``: the same fingerprint means the same outcome."""
    from rag.config import resolve_path
    from rag.provenance import adapter_digest

    adapters = {name: adapter_digest(resolve_path(p)) for name, p in (
        ("generator", config.generator.adapter), ("verifier", config.verifier.adapter),
        ("answerability", getattr(config.verifier, "answerability_adapter", None)),
        ("index_answerability", getattr(config.index, "answerability_adapter", None))) if p}
    body = {
        "embedder": config.embedder.model_dump(exclude={"batch_size"}),
        "generator": config.generator.model_dump(exclude={"threads", "batch_size"}),
        "verifier": _without_neutral(config.verifier.model_dump()),
        "retrieval": config.retrieval.model_dump(),
        "chunking": config.chunking.model_dump(),
        "adapters": adapters,
        "settings": _without_neutral(_without_provenance(settings)),
        "indexes": sorted(index_digest(m) for m in manifests),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def outcomes(rows: list[dict[str, Any]], settings: dict[str, Any], records: dict[str, Any], fp: str
             ) -> list[dict[str, Any]]:
    """Each recorded question's outcome under ``settings`` (ids and numbers only), with what another answer
    calibration needs to replay it (:func:`replay`): the threshold it was shown at and, under ``at_zero``, the answer
    the pipeline generates past the gate with no threshold (its signals, numbers only, and its verdict), or None."""
    zero = trust.outcomes(rows, trust.at_threshold_zero(settings), records)
    return [{"id": r["id"], "suite": r["suite"], "answerable": bool(r["answerable"]), "answered": bool(o["answered"]),
             "confidence": round(float(o["confidence"]), 6), "right": bool(o["right"]),
             "by_person": bool(o.get("labelled", False)), "fingerprint": fp,
             "threshold": trust.point(r, settings)[1],
             "at_zero": {"right": bool(z["right"]), "by_person": bool(z.get("labelled", False)),
                         "signals": {k: round(float(v), 6) for k, v in sorted(z["signals"].items())
                                     if isinstance(v, (int, float))}} if z["answered"] else None}
            for r, o, z in zip(rows, trust.outcomes(rows, settings, records), zero, strict=True)]


def replay(kept: list[dict[str, Any]], calib: dict[str, Any], zero: bool = False) -> list[dict[str, Any]]:
    """Kept outcomes under another answer calibration with the same gate model, gate and support settings (the
    signals of each generated answer are kept, so only the confidence and the threshold change): the product's
    outcomes, or with ``zero`` every generated answer. Outcomes of runs too old to hold signals cannot be replayed:
    keep them again from their rows."""
    from rag.errors import InputError

    out = []
    for k in kept:
        if "at_zero" not in k:
            raise InputError(f"kept outcome {k['id']} ({k.get('fingerprint')}) has no signals: it was kept before "
                             "they were; `eval trust keep` it again from the run's rows")
        z = k["at_zero"]
        conf = trust.probability(calib, z["signals"]) if z else 0.0
        # the threshold meets the probability before a monotone map (rag.confidence.decision_score)
        shown = z is not None and (zero or trust.probability(calib, z["signals"], mapped=False)
                                   >= float(k["threshold"]))
        out.append({"id": k["id"], "suite": k["suite"], "answerable": k["answerable"], "answered": shown,
                    "confidence": conf, "right": bool(z["right"]) if shown else not k["answerable"],
                    "labelled": bool(z and z.get("by_person"))})
    return out


# A calibration's entries that change the shown probability only: kept outcomes move to a calibration that differs
# from theirs in these alone by replay (:func:`rekeyed`), with no question asked again.
MAP_ONLY = ("monotone", "note", "created")


def rekeyed(kept: list[dict[str, Any]], calib: dict[str, Any], fp: str) -> list[dict[str, Any]]:
    """``kept`` (outcomes with signals) under ``calib``'s shown probability and fingerprint ``fp``: the same answers
    shown and the same verdicts (the threshold meets the probability before a monotone map), new confidences. Refuses
    a calibration that would show other answers: those need the run's rows (`eval trust keep`)."""
    from rag.errors import InputError

    out = []
    for k, o in zip(kept, replay(kept, calib), strict=True):
        if o["answered"] != k["answered"] or (k["answered"] and o["right"] != k["right"]):
            raise InputError(f"{k['id']}: this calibration shows another outcome than the kept one; keep the run's "
                             "rows under it instead (`eval trust keep`)")
        conf = round(float(o["confidence"]), 6) if k["at_zero"] else k["confidence"]
        out.append({**k, "confidence": conf, "fingerprint": fp})
    return out


def check_gate(calib: dict[str, Any], onto: str, config: Any) -> None:
    """Refuse a calibration (``onto``) whose gate model differs from ``config``'s: kept outcomes were replayed at the
    config's gate, so only the answer calibration may change in a replay or refit from them."""
    from rag.config import resolve_path
    from rag.errors import InputError

    path = config.confidence.calibration
    current = json.loads(resolve_path(path).read_text(encoding="utf-8")) if path else {}
    if calib.get("gate") != current.get("gate"):
        raise InputError(f"--onto {onto} has another gate model than the config's calibration ({path}), under which "
                         "the outcomes were kept; refit on a run's rows (`eval trust fit --refit-answers`)")


def with_signals(path: Path, fp: str | None = None, half: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The kept outcomes of one fingerprint (``fp``, or the one most outcomes with signals are kept under) that
    :func:`replay` can read, of one half of the ece part if asked (``half``: a file of the ece part's outcomes):
    (fingerprint, outcomes)."""
    from collections import Counter

    from eval import trust_set
    from rag.errors import InputError

    if not path.exists():
        raise InputError(f"{path} not found; kept outcomes are in eval/results/ (`eval trust keep` writes them)")
    rows = [r for r in load(path) if "at_zero" in r]
    if fp is None:
        common = Counter(r["fingerprint"] for r in rows).most_common(1)
        if not common:
            raise InputError(f"{path} holds no outcomes kept with their signals; `eval trust keep` a run's rows again")
        fp = common[0][0]
    rows = [r for r in rows if r["fingerprint"] == fp and (half is None or trust_set.ece_half(r["id"]) == half)]
    if not rows:
        raise InputError(f"{path}: no outcome with signals under fingerprint {fp}")
    return fp, rows


def load(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [row for _, row in jsonl.objects(path, f"restore it with `git checkout {path}`")]


def kept_ids(path: Path, fp: str) -> set[str]:
    """The questions already kept under this fingerprint (not to be asked again)."""
    return {r["id"] for r in load(path) if r.get("fingerprint") == fp}


def merge(path: Path, new: list[dict[str, Any]]) -> tuple[int, int]:
    """Add ``new`` outcomes to the file (one per question: a new one replaces the old); written atomically.
    Returns (added, replaced)."""
    by_id = {r["id"]: r for r in load(path)}
    added = sum(r["id"] not in by_id for r in new)
    by_id.update({r["id"]: r for r in new})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for qid in sorted(by_id):
            f.write(json.dumps(by_id[qid], sort_keys=True) + "\n")
    tmp.replace(path)
    return added, len(new) - added
