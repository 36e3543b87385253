"""The answerability gate alone, per verifier: how many out-of-corpus questions it stops before any
generation, and how many answerable ones it lets through (no generation: minutes, not hours).

    python -m eval.trust_gate --adapter v2=adapters/verifier-minilm --adapter v3=adapters/verifier-minilm-v3 \
        --output .cds/eval/gate

Per adapter, every question of both trust parts is retrieved and gated as the runtime does (the demo
suites on the demo index, the rest on the trust index); the gate model (``trust.fit_gate``: answerability
logit, retrieval, agreement) is fitted on **dev** and the threshold is chosen on dev as the one that
lets the most answerable questions through while stopping >= ``--target`` of the out-of-corpus ones;
test is reported at that threshold. The gate is a lower bound on abstention: the checks after
generation only abstain more.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corpora.errors import CDSError
from eval import trust, trust_jobs, trust_set
from eval.mcq import stats
from rag import Assistant
from rag.answer import Answer
from rag.confidence import answerability_logit
from rag.config import data_dir, load_config, resolve_path
from rag.errors import InputError

log = logging.getLogger(__name__)
GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))


def _assistants(adapter: str, trust_index: str, overrides: Sequence[str] = ()) -> dict[str, Assistant]:
    """The trust-index and demo-index assistants gating with the verifier ``adapter`` (no calibration)."""
    cfg = load_config(overrides=[f"verifier.answerability_adapter={adapter}", "verifier.answerable_min=0.0",
                                 "index.operating_point=null",
                                 "confidence.calibration=null", *overrides])
    first = Assistant(trust_jobs.trust_config(cfg, trust_index))
    return {"trust": first, "demo": Assistant.open(cfg, embedder=first.embedder, verifier=first.verifier)}


def _gated(assistants: dict[str, Assistant], qs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for q in qs:
        a = assistants["demo" if q["suite"].startswith("demo_") else "trust"]
        step = a.prepare(q["question"], q.get("patient_id"), None, True)
        sig = dict(step.confidence_signals if isinstance(step, Answer) else step.signals)
        sig.setdefault("answerability", 0.0)
        sig["answerability_logit"] = answerability_logit(sig["answerability"])
        rows.append({"id": q["id"], "suite": q["suite"], "answerable": q["answerable"], "signals": sig})
    return rows


def signals(adapter: str, part: str, trust_index: str, overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Each question's gate signals with the verifier ``adapter`` (no calibration, no generation); ``overrides``
    are further ``--set KEY=VALUE`` settings (a candidate such as ``verifier.expand_question=true``)."""
    return _part(_assistants(adapter, trust_index, overrides), part)


def _part(assistants: dict[str, Assistant], part: str) -> list[dict[str, Any]]:
    return _gated(assistants, trust_set.questions(trust_set.load(), part, data_dir(assistants["demo"].config)))


def fresh_questions(path: Path) -> list[dict[str, Any]]:
    """A question file of ``eval/questions`` asked on the demo index: answerable when a row names its gold
    documents (``gold_doc_ids``), out of corpus otherwise; the suite is the file's name."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read question file {path}: {type(e).__name__}; pass a JSON-lines file of "
                         "eval/questions") from e
    return [{"id": r["id"], "question": r["question"], "suite": f"demo_{path.stem}",
             "answerable": bool(r.get("gold_doc_ids"))} for r in rows]


def fresh_study(dev: list[dict[str, Any]], fresh: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The gate fitted on all of dev, its threshold chosen there at ``target``, applied to questions it was not
    fitted on (``fresh``): what it stops per question file."""
    gate = trust.fit_gate(dev)
    chosen = _choose(dev, gate, target)
    return {"threshold": chosen["threshold"], "dev": {k: v for k, v in chosen.items() if k != "threshold"},
            "fresh": _rates(fresh, gate, chosen["threshold"])}


def _rates(rows: list[dict[str, Any]], gate: dict[str, Any], t: float) -> dict[str, Any]:
    p = [trust.probability(gate, r["signals"]) for r in rows]
    ooc = [pi < t for pi, r in zip(p, rows, strict=True) if not r["answerable"]]
    ans = [pi < t for pi, r in zip(p, rows, strict=True) if r["answerable"]]
    by_suite = _stopped_by_suite(rows, [pi < t for pi in p])
    return {"threshold": t, "ooc_stopped": sum(ooc), "ooc": len(ooc), "answerable_stopped": sum(ans),
            "answerable": len(ans), "ooc_stopped_ci": stats.wilson(sum(ooc), len(ooc)),
            "answerable_stopped_ci": stats.wilson(sum(ans), len(ans)),
            "stopped_by_suite": by_suite}


def _stopped_by_suite(rows: list[dict[str, Any]], stopped: list[bool]) -> dict[str, str]:
    """"stopped/asked" per suite; a suite holding answerable and out-of-corpus questions (patient records with and
    without the asked fact) is counted per kind, so what it stops is never a sum of both."""
    mixed = {s for s in {r["suite"] for r in rows}
             if len({r["answerable"] for r in rows if r["suite"] == s}) > 1}
    counts: dict[str, list[int]] = {}
    for r, st in zip(rows, stopped, strict=True):
        key = r["suite"] + (("/answerable" if r["answerable"] else "/out_of_corpus") if r["suite"] in mixed else "")
        counts.setdefault(key, [0, 0])
        counts[key][0] += st
        counts[key][1] += 1
    return {k: f"{v[0]}/{v[1]}" for k, v in sorted(counts.items())}


def study(adapter: str, trust_index: str, target: float, test: bool = True) -> dict[str, Any]:
    """Fit the gate and choose its threshold on dev; report test at it only when ``test``."""
    dev = signals(adapter, "dev", trust_index)
    gate = trust.fit_gate(dev)
    chosen = _choose(dev, gate, target)
    out = {"adapter": adapter, "gate": gate, "dev": chosen, "dev_rows": dev}
    if test:
        test_rows = signals(adapter, "test", trust_index)
        out.update(test=_rates(test_rows, gate, chosen["threshold"]), test_rows=test_rows)
    return out


def _choose(rows: list[dict[str, Any]], gate: dict[str, Any], target: float) -> dict[str, Any]:
    """The threshold that stops >= ``target`` of ``rows``' out-of-corpus questions with the fewest answerable."""
    curve = [_rates(rows, gate, t) for t in GRID]
    ok = [c for c in curve if c["ooc_stopped"] >= target * c["ooc"]]
    return min(ok, key=lambda c: (c["answerable_stopped"], -c["ooc_stopped"])) if ok else curve[-1]


def cross_validate(rows: list[dict[str, Any]], features: tuple[str, ...], target: float, folds: int = 5,
                   seed: int = 0) -> dict[str, Any]:
    """Dev-only: fit the gate and choose its threshold on k-1 folds, count what it stops on the held-out fold.

    Folds are stratified by suite, so every fold holds each kind of question. Pooled over the held-out
    folds, this says what a gate with ``features`` stops on questions it was not fitted on."""
    import random

    fold_of: dict[str, int] = {}
    by_suite: dict[str, list[str]] = {}
    for r in rows:
        by_suite.setdefault(r["suite"], []).append(r["id"])
    rng = random.Random(seed)
    for suite in sorted(by_suite):
        ids = sorted(by_suite[suite])
        rng.shuffle(ids)
        fold_of.update({qid: i % folds for i, qid in enumerate(ids)})
    held: list[dict[str, Any]] = []
    for k in range(folds):
        train = [r for r in rows if fold_of[r["id"]] != k]
        gate = trust.fit_gate(train, features)
        t = _choose(train, gate, target)["threshold"]
        held.extend({**r, "stopped": trust.probability(gate, r["signals"]) < t}
                    for r in rows if fold_of[r["id"]] == k)
    ooc = [r["stopped"] for r in held if not r["answerable"]]
    ans = [r["stopped"] for r in held if r["answerable"]]
    return {"features": list(features), "folds": folds, "seed": seed, "ooc_stopped": sum(ooc), "ooc": len(ooc),
            "answerable_stopped": sum(ans), "answerable": len(ans),
            "stopped_by_suite": _stopped_by_suite(held, [r["stopped"] for r in held])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapter", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--trust-index", default=".cds/index/trust")
    ap.add_argument("--target", type=float, default=0.95, help="out-of-corpus share the gate must stop on dev")
    ap.add_argument("--output", default=".cds/eval/gate")
    ap.add_argument("--dev-only", action="store_true", help="choose on dev and stop: test stays unread")
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="dev only: K-fold cross-validation of each --features set (test stays unread)")
    ap.add_argument("--features", action="append", metavar="NAME=F1,F2,...",
                    help=f"a gate feature set for --cv (default: {','.join(trust.GATE_FEATURES)})")
    ap.add_argument("--signals", help="with --cv: the dev signals of an earlier --cv run (gate-NAME-dev.json)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="with --cv: a setting for the signal runs (e.g. verifier.expand_question=true)")
    ap.add_argument("--fresh", action="append", default=[], metavar="FILE",
                    help="with --cv: also fit the gate on all of dev and report what it stops of these question "
                         "files (eval/questions/*.jsonl, asked on the demo index; read as aggregates)")
    args = ap.parse_args(argv)
    if args.fresh and not args.cv:
        ap.error("--fresh needs --cv (the gate is fitted on the dev signals that run computes)")
    try:
        # fresh files are read first: a bad one is one line now, not after minutes of dev signals
        fresh = [q for f in args.fresh for q in fresh_questions(resolve_path(f))]
        out = resolve_path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        return _cv_main(args, out, fresh) if args.cv else _study_main(args, out)
    except CDSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _study_main(args: argparse.Namespace, out: Path) -> int:
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        r = study(path, args.trust_index, args.target, test=not args.dev_only)
        Path(out / f"gate-{name}.json").write_text(json.dumps(r, indent=1), encoding="utf-8")
        for part in ("dev", "test") if "test" in r else ("dev",):
            c = r[part]
            print(f"{name} {part} threshold {c['threshold']:.2f}: out of corpus stopped {c['ooc_stopped']}/{c['ooc']} "
                  f"({100 * c['ooc_stopped'] / c['ooc']:.1f}%), answerable stopped {c['answerable_stopped']}/"
                  f"{c['answerable']} ({100 * c['answerable_stopped'] / c['answerable']:.1f}%) "
                  f"{c['stopped_by_suite']}", flush=True)
    return 0


def _cv_main(args: argparse.Namespace, out: Path, fresh: list[dict[str, Any]]) -> int:
    sets = [tuple(spec.partition("=")[2].split(",")) if "=" in spec else tuple(spec.split(","))
            for spec in args.features or [",".join(trust.GATE_FEATURES)]]
    names = [spec.partition("=")[0] if "=" in spec else spec for spec in args.features or ["standard"]]
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        # one set of assistants (models and indexes loaded once) for the dev signals and the fresh files
        assistants = _assistants(path, args.trust_index, args.overrides) if fresh or not args.signals else None
        if args.signals:
            dev = json.loads(Path(args.signals).read_text(encoding="utf-8"))
        else:
            assert assistants is not None
            dev = _part(assistants, "dev")
            (out / f"gate-{name}-dev.json").write_text(json.dumps(dev), encoding="utf-8")
        results = []
        for set_name, feats in zip(names, sets, strict=True):
            missing = sorted({f for f in feats if f != "answerability_logit"} - set(dev[0]["signals"]))
            if missing:
                raise SystemExit(f"error: no dev signal named {', '.join(missing)}")
            r = cross_validate(dev, feats, args.target, args.cv)
            results.append({"name": set_name, **r})
            print(f"{name} {set_name} ({','.join(feats)}) {args.cv}-fold dev: out of corpus stopped "
                  f"{r['ooc_stopped']}/{r['ooc']} ({100 * r['ooc_stopped'] / r['ooc']:.1f}%), answerable stopped "
                  f"{r['answerable_stopped']}/{r['answerable']} "
                  f"({100 * r['answerable_stopped'] / r['answerable']:.1f}%) {r['stopped_by_suite']}", flush=True)
        (out / f"gate-{name}-cv.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        if assistants is not None and fresh:
            rows = _gated(assistants, fresh)
            r = fresh_study(dev, rows, args.target)
            (out / f"gate-{name}-fresh.json").write_text(json.dumps({**r, "rows": rows}, indent=1), encoding="utf-8")
            f = r["fresh"]
            print(f"{name} fresh (gate fitted on all dev, threshold {r['threshold']:.2f}): out of corpus stopped "
                  f"{f['ooc_stopped']}/{f['ooc']}, answerable stopped {f['answerable_stopped']}/{f['answerable']} "
                  f"{f['stopped_by_suite']}", flush=True)
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
