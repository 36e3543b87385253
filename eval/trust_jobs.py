"""The `app.py eval trust` jobs that need more than one library call: asking a part of the trust set.

Kept out of app.py (the CLI only parses, calls and prints).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eval import trust, trust_set
from rag import Assistant
from rag.errors import InputError
from rag.generate import Generation

log = logging.getLogger(__name__)


class ReplayGenerator:
    """The generator's earlier replies, given again for the same prompt; anything else is generated.

    A new verifier, gate or support setting does not change what the generator was shown (the
    retrieval and the prompt are the same), so its earlier draft is its answer again: ``--replay``
    re-checks every earlier answer with the current verifier for free, and only questions that were
    not generated before reach the model. The generation-probability signal is reproduced (every
    token at the earlier geometric mean); replayed answers' generation timings are the earlier ones.
    """

    def __init__(self, rows: list[dict[str, Any]], real: Callable[[], Any]):
        self._rows = [r for r in rows if r.get("generated") and r.get("draft") is not None]
        self._real_factory = real
        self._real: Any = None
        self._used: set[int] = set()  # each earlier draft answers one prompt: a second try is generated
        self.replayed = 0
        self.generated = 0

    def _real_gen(self) -> Any:
        if self._real is None:
            self._real = self._real_factory()
        return self._real

    def __getattr__(self, name: str) -> Any:  # model_id, adapter, count_tokens ... from the real generator
        return getattr(self._real_gen(), name)

    def _earlier(self, messages: list[dict[str, str]]) -> dict[str, Any] | None:
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        hits = [i for i, r in enumerate(self._rows) if i not in self._used and r["question"] in user
                and (not r.get("patient_id") or str(r["patient_id"]) in user)]
        # Several earlier rows fit (the same question about two patients without the id shown): generate.
        if len({self._rows[i]["draft"] for i in hits}) != 1:
            return None
        self._used.update(hits)
        return self._rows[hits[0]]

    @staticmethod
    def _generation(row: dict[str, Any]) -> Generation:
        t = row.get("timings_ms") or {}
        n = max(int(t.get("new_tokens") or 1), 1)
        g = float((row.get("signals") or {}).get("generation", 1.0))
        return Generation(row["draft"], [g] * n, int(t.get("prompt_tokens") or 0), n,
                          float(t.get("first_token") or 0.0), float(t.get("generation") or 0.0))

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, temperature: float = 0.0,
                 on_text: Any = None) -> Generation:
        return self.generate_batch([messages], max_new_tokens)[0]

    def generate_batch(self, batch: list[list[dict[str, str]]], max_new_tokens: int) -> list[Generation]:
        found = [self._earlier(m) for m in batch]
        out: list[Generation | None] = [self._generation(r) if r is not None else None for r in found]
        missing = [i for i, g in enumerate(out) if g is None]
        if missing:
            fresh = self._real_gen().generate_batch([batch[i] for i in missing], max_new_tokens)
            for i, g in zip(missing, fresh, strict=True):
                out[i] = g
        self.replayed += len(batch) - len(missing)
        self.generated += len(missing)
        return [g for g in out if g is not None]


def trust_config(config: Any, trust_index: str) -> Any:
    """The config pointed at the trust index (never auto-building the demo there)."""
    c = config.model_copy(deep=True)
    # Another index: an answerability adapter adapted to the configured index's documents does not apply there.
    c.index.dir, c.index.auto_build_demo, c.index.answerability_adapter = trust_index, False, None
    c.index.operating_point = None  # chosen on the configured index's documents: not this one's
    return c


def run_part(config: Any, trust_index: str, part: str, data: Path, rows_path: Path, floor: float = 0.05,
             batch_size: int = 8, limit: int | None = None, regenerate_above: float | None = None,
             gate_from: Path | None = None, progress: Callable[[int], Callable[[int, int], None]] | None = None,
             replay: Path | None = None, suites: list[str] | None = None, resume: bool = False,
             skip_kept: Path | None = None, half: str | None = None, added_only: bool = False
             ) -> list[dict[str, Any]]:
    """Ask one part through the assistant (demo suites on ``config``'s index, the rest on the trust index).

    Questions are generated when the gate value reaches ``floor``. With ``regenerate_above``, only the
    questions of the earlier run in ``rows_path`` that were not generated but whose gate probability
    (the gate model in ``gate_from``) reaches it are asked again, with no gate, and merged in.
    With ``replay`` (an earlier run's records), the generator's earlier drafts are reused for the
    same prompts (:class:`ReplayGenerator`): every check is recomputed, only new prompts generate.
    ``suites`` keeps only those suites (a diagnostic run: its records are not a whole part).
    ``skip_kept`` (an ``eval/results/`` file, :mod:`eval.trust_kept`): questions whose outcome is kept
    there under this config's fingerprint are not asked again. ``half`` (ece part only: ``fit`` or ``report``,
    :func:`eval.trust_set.ece_half`) asks one half: a calibration fitted on the fit half is reported on the other.
    ``added_only`` asks only the questions `eval trust split --dev-medquad/--test-medquad/--ece-medquad` appended.
    Every record is also appended to ``rows-PART.journal.jsonl`` as it is made; with ``resume`` the
    questions already there are not asked again (without it an old journal is discarded).
    """
    if half is not None and part != "ece":
        raise InputError(f"--ece-half applies to the ece part only, not {part!r}")
    split = trust_set.load()
    added = set(trust_set.added(split, part)) if added_only else set()
    if added_only and not added:
        raise InputError(f"--added-only: `eval trust split --{part}-medquad N` has added no question to {part}")
    qs = trust_set.questions(split, part, data)
    if half is not None:
        qs = [q for q in qs if trust_set.ece_half(q["id"]) == half]
    if added_only:
        qs = [q for q in qs if q["id"] in added]
    if suites:
        unknown = set(suites) - {q["suite"] for q in qs}
        if unknown:
            raise InputError(f"--suite {sorted(unknown)[0]}: no such suite in the {part} part; "
                             f"one of {sorted({q['suite'] for q in qs})}")
        qs = [q for q in qs if q["suite"] in suites]
    earlier: list[dict[str, Any]] = []
    if regenerate_above is not None:
        if gate_from is None or not rows_path.exists():
            raise InputError("--regenerate-above needs --gate-from CALIBRATION.json and an earlier run's records")
        gate_cal = json.loads(gate_from.read_text(encoding="utf-8"))
        earlier = trust.load_rows(rows_path)
        again = {r["id"] for r in earlier if not r["generated"] and trust.gate_value(r, gate_cal) >= regenerate_above}
        qs = [q for q in qs if q["id"] in again]
        floor = 0.0
    if limit:
        qs = [q for i, q in enumerate(qs) if sum(x["suite"] == q["suite"] for x in qs[:i]) < limit]
    cfgs = []
    for c in (trust_config(config, trust_index), config):
        c = c.model_copy(deep=True)
        c.verifier.answerable_min = floor
        c.index.operating_point = None  # every question past the floor is generated, whatever point replays it
        cfgs.append(c)
    first = Assistant(cfgs[0])
    generator: Any = None
    if replay is not None:
        if not replay.exists():
            raise InputError(f"--replay {replay}: no such records file; run `eval trust run` without it first")
        plain = first  # its generator loads (lazily) only when a prompt was not seen before
        generator = ReplayGenerator(trust.load_rows(replay), lambda: plain.generator)
        first = Assistant(cfgs[0], generator=generator)
    # One set of models for both indexes (same embedder, generator and verifier).
    assistants = {"trust": first, "demo": Assistant.open(cfgs[1], embedder=first.embedder,
                                                         generator=generator or first.generator,
                                                         verifier=first.verifier,
                                                         answerability_verifier=first.answerability_verifier)}
    if skip_kept is not None:
        from eval import trust_kept

        fp = kept_fingerprint(config, trust_index, floor)
        kept = trust_kept.kept_ids(skip_kept, fp)
        log.info("%d of %d questions already kept in %s (fingerprint %s): not asked", len({q["id"] for q in qs} & kept),
                 len(qs), skip_kept, fp)
        qs = [q for q in qs if q["id"] not in kept]
    journal = rows_path.with_name(f"rows-{part}.journal.jsonl")
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        journal.unlink(missing_ok=True)
    rows = trust.run(assistants, qs, data / trust_set.HF_CSV, batch_size,
                     on_answer=progress(len(qs)) if progress else None, journal=journal)
    for r in rows:
        r["floor"] = floor
    if isinstance(generator, ReplayGenerator):
        log.info("replayed %d earlier drafts, generated %d", generator.replayed, generator.generated)
    if earlier:
        new = {r["id"]: r for r in rows}
        for r in earlier:
            r["floor"] = regenerate_above  # now: never generated only below this gate probability
        rows = [new.get(r["id"], r) for r in earlier]
    for path in set_aside(rows_path, journal, {r["id"] for r in rows}):
        log.warning("%s holds records of questions this run did not ask; kept as %s", rows_path.parent, path)
    trust.write_rows(rows, rows_path)
    journal.unlink(missing_ok=True)
    return rows


def set_aside(rows_path: Path, journal: Path, final_ids: set[str]) -> list[Path]:
    """Before a run writes its records: keep the earlier records file, and the journal, aside when they hold
    records of questions the run's own records will not (a run with ``--skip-kept``, ``--suite`` or ``--limit``
    into a folder an earlier run wrote): they would be lost otherwise (hours of generation). Each is renamed
    to ``<name>.aside-<UTC time>.jsonl`` whole; returns the new paths."""
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    out = []
    for path in (rows_path, journal):
        if path.exists() and any(r["id"] not in final_ids for r in trust.load_rows(path)):
            aside = path.with_name(f"{path.name.removesuffix('.jsonl')}.aside-{stamp}.jsonl")
            path.replace(aside)
            out.append(aside)
    return out


def kept_fingerprint(config: Any, trust_index: str, floor: float) -> str:
    """The fingerprint of outcomes under ``config`` (:func:`eval.trust_kept.fingerprint`) with the indexes on disk."""
    from eval import trust_kept
    from rag.config import resolve_path
    from rag.index import read_manifest

    manifests = [read_manifest(resolve_path(d))[1] for d in (trust_index, config.index.dir)]
    return trust_kept.fingerprint(config, trust.settings_from(config, floor), manifests)


def keep(config: Any, rows_path: Path, labels: list[Path], trust_index: str, to: Path) -> dict[str, Any]:
    """Add a run's outcomes (its rows, or the journal of a run still going) to ``to`` under this config's
    fingerprint; the run must have been made with this config's settings for them to mean anything."""
    from eval import trust_kept

    if not rows_path.exists():
        journal = rows_path.with_name(rows_path.name.replace(".jsonl", ".journal.jsonl"))
        if not journal.exists():
            raise InputError(f"{rows_path} not found (nor its journal); run `python app.py eval trust run` first")
        rows_path = journal
    rows = prepare_rows(config, rows_path, labels, trust_index)
    floor = max(float(r.get("floor", 0.05)) for r in rows)
    fp = kept_fingerprint(config, trust_index, floor)
    added, replaced = trust_kept.merge(to, trust_kept.outcomes(rows, trust.settings_from(config, floor),
                                                               load_records(config), fp))
    return {"file": str(to), "fingerprint": fp, "added": added, "replaced": replaced,
            "kept_under_fingerprint": len(trust_kept.kept_ids(to, fp))}


def add_answer_answerability(config: Any, rows: list[dict[str, Any]]) -> int:
    """Give the ``answer_answerability`` signal to answers recorded before it existed, computed as the
    assistant computes it (its answerability verifier on the recorded shown sentences); returns how many.

    Replayed under other support settings an answer may show fewer sentences than it was recorded
    with; the signal stays that of the recorded answer (a small approximation, said in BENCHMARKS)."""
    from rag.verifier import answer_answerability

    todo = [r for r in rows if "answer_answerability" not in r["signals"] and r.get("generated")
            and any(s["supported"] for s in r["sentences"])]
    if not todo:
        return 0
    verifier = Assistant(config).answerability_verifier
    if verifier is None:
        raise InputError("the verifier is disabled in this config; the answer_answerability signal needs it")
    for r in todo:
        r["signals"]["answer_answerability"] = answer_answerability(
            verifier, r["question"], [s["text"] for s in r["sentences"] if s["supported"]])
    return len(todo)


def add_titles(config: Any, trust_index: str, rows: list[dict[str, Any]]) -> int:
    """Give each recorded source its document title (the subject-variant check reads titles) when the row
    was recorded before titles were; read from the demo and trust indexes' current versions. Returns how
    many sources got one."""
    from rag.config import resolve_path
    from rag.index import current_version

    todo = [src for r in rows for row in (r, r.get("second_try") or {}) for src in row.get("sources", [])
            if "title" not in src]
    if not todo:
        return 0
    titles: dict[str, str] = {}
    for root in (resolve_path(config.index.dir), resolve_path(trust_index)):
        version = current_version(root)
        if version is None:
            continue
        with (root / "versions" / version / "chunks.jsonl").open(encoding="utf-8") as f:
            for line in f:
                c = json.loads(line)
                titles.setdefault(c["doc_id"], c.get("title") or "")
    missing = {src["doc_id"] for src in todo if src["doc_id"] not in titles}
    if missing:
        raise InputError(f"{len(missing)} recorded sources are in neither index (e.g. {sorted(missing)[0]}); "
                         "report with the indexes the rows were recorded on")
    for src in todo:
        src["title"] = titles[src["doc_id"]]
    return len(todo)


def add_unseen_terms(config: Any, trust_index: str, rows: list[dict[str, Any]]) -> int:
    """Record the ``unseen_terms`` and ``novel_terms`` checks (:mod:`rag.coverage`) on every recorded sentence, as
    the assistant records them, from the BM25 statistics of the index each question ran on (demo suites: the
    config's index; the rest: the trust index), so that ``verifier.unseen_terms`` and ``verifier.novel_terms`` can be
    replayed on rows recorded before them; and each question's ``subject_terms`` (:func:`rag.coverage.subject_weights`,
    for the subject signals). Returns how many sentences restate an unseen question word."""
    from rag.cite import strip_markers
    from rag.config import resolve_path
    from rag.coverage import subject_weights, vocabulary_checks
    from rag.index import HybridIndex

    stats: dict[str, Any] = {}

    def of(suite: str) -> Any:
        key = "demo" if suite.startswith("demo_") else "trust"
        if key not in stats:
            root = resolve_path(config.index.dir if key == "demo" else trust_index)
            stats[key] = HybridIndex.load(root, verify=False).term_stats
            if stats[key] is None:
                raise InputError(f"the index at {root} has no BM25 statistics; rebuild it with this version")
        return stats[key]

    flagged = 0
    for r in rows:
        r["subject_terms"] = subject_weights(r["question"], of(r["suite"]))  # for a subject_min replay
        for row in (r, r.get("second_try") or {}):
            if not row.get("sentences"):
                continue
            checks = vocabulary_checks([strip_markers(s["text"]) for s in row["sentences"]], r["question"],
                                       of(r["suite"]))
            for s, (asked, novel) in zip(row["sentences"], checks, strict=True):
                s["checks"].pop("unseen_terms", None)
                s["checks"].pop("novel_terms", None)
                if asked:
                    s["checks"]["unseen_terms"] = False
                    flagged += 1
                if novel:
                    s["checks"]["novel_terms"] = False
    return flagged


def prepare_rows(config: Any, rows_path: Path, labels: list[Path], trust_index: str,
                 say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """A part's recorded rows ready to replay: a person's verdicts attached, titles and the
    answer_answerability signal added where the rows predate them, the unseen-terms check recorded on every
    sentence (each step ``say``s what it did)."""
    rows = trust.load_rows(rows_path)
    if labels:
        from eval import trust_labels

        counts = trust_labels.attach(rows, trust_labels.load(labels))
        say(f"verdicts by a person: {counts['labelled']} answers of this part labelled, "
            f"{counts['match_recorded_answer']} match the recorded answer; {counts['unknown_ids']} label ids "
            "are not in this part")
    if (n := add_titles(config, trust_index, rows)):
        say(f"source titles read from the indexes for {n} sources recorded before titles were")
    if (n := add_answer_answerability(config, rows)):
        say(f"answer_answerability computed for {n} answers recorded before the signal existed")
    if (n := add_unseen_terms(config, trust_index, rows)):
        say(f"unseen-terms check recorded: {n} sentences restate a question word no indexed passage contains")
    return rows


def load_records(config: Any) -> dict[str, Any]:
    """The heart-failure records the patient questions are scored against, by patient id."""
    from corpora.heart_failure import read_records
    from corpora.report import LoadReport
    from rag.config import data_dir

    return {r.patient_id: r for r in read_records(data_dir(config) / trust_set.HF_CSV,
                                                  LoadReport(fmt="uci-heart-failure"))}


def dev_study(rows_path: str, labels: list[str], trust_index: str, why: str
              ) -> tuple[Any, list[dict[str, Any]], dict[str, Any], float]:
    """What a dev-only study of recorded rows needs: the default config, the prepared rows, the records and
    the run's generation floor. Refuses a test rows file (``why`` says what is compared on dev)."""
    from rag.config import load_config, resolve_path

    if "test" in Path(rows_path).name:
        raise SystemExit(f"dev rows only: {why}")
    cfg = load_config()
    rows = prepare_rows(cfg, resolve_path(rows_path), [resolve_path(p) for p in labels], trust_index)
    return cfg, rows, load_records(cfg), max(float(r.get("floor", 0.05)) for r in rows)


def halves(rows: list[dict[str, Any]], repeats: int, seed: int = 0) -> list[np.ndarray]:
    """Masks of half A per repeat of a 50/50 split of ``rows``, stratified by suite (the dev-only studies' split)."""
    import random
    from collections import defaultdict

    by_suite: dict[str, list[int]] = defaultdict(list)
    for j, r in enumerate(rows):
        by_suite[r["suite"]].append(j)
    rng = random.Random(seed)
    out = []
    for _ in range(repeats):
        a = np.zeros(len(rows), bool)
        for idx in by_suite.values():
            a[rng.sample(idx, len(idx) // 2)] = True
        out.append(a)
    return out
