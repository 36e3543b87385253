"""The Assistant: question (+ patient) -> cited, confidence-scored Answer, or an abstention."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag import confidence as conf
from rag import operating, provenance
from rag.abbrev import expand
from rag.answer import Answer, Citation, SentenceRecord
from rag.backends import Backend, load_backend
from rag.cite import (
    about_patient,
    check_support,
    claims_rule_change,
    clean_markers,
    mark_cut,
    numbers_in,
    parse_markers,
    strip_markers,
    unanswered_measures,
    unfinished,
)
from rag.config import AppConfig, load_config, resolve_path
from rag.coverage import lexical_signals, vocabulary_checks
from rag.embed import Embedder, load_embedder
from rag.errors import ConfigError, InputError, UnknownPatientError
from rag.generate import ABSTAIN_TOKEN, Generation, PromptSource, build_messages, fit_sources, is_abstention
from rag.index import HybridIndex, current_version, embedder_manifest, read_manifest
from rag.index_jobs import IndexJobs
from rag.inputs import clean_patient_id, clean_question
from rag.models import EmbedderSpec, resolve
from rag.retrieve import HybridRetriever, Retrieval, Scorer, Unit
from rag.subject import other_variant
from rag.text import split_sentences
from rag.verifier import Verifier, adapter_mismatch, answer_answerability

log = logging.getLogger(__name__)

ABSTAIN_MESSAGE = ("The indexed sources do not answer this question with enough support. "
                   "The closest sources are listed below; review them directly.")
MODEL_FOUND_NOTHING = "the generator found no answer in the sources"
NOTHING_SUPPORTED = "no answer sentence is supported by a cited source"


class Assistant:
    """Hybrid retrieval + grounded generation. Models and index load lazily on first use.

    ``embedder``/``generator`` may be injected (tests pass a hash embedder and a tiny model). An injected
    ``verifier`` also judges answerability unless ``answerability_verifier`` is injected too: injecting one
    verifier never loads another model behind it (``verifier.answerability_adapter`` is for loaded verifiers).
    Answering only: the index is built and managed by :class:`rag.index_jobs.IndexJobs`, and a
    missing demo index is built by the explicit :meth:`open` / :meth:`ensure_index`, never by
    reading :attr:`index`.
    """

    def __init__(self, config: AppConfig, embedder: Embedder | None = None, generator: Backend | None = None,
                 progress: bool = False, verifier: Verifier | None = None,
                 answerability_verifier: Verifier | None = None, index_verifier: Verifier | None = None):
        self.config = config
        self.progress = progress
        self._embedder = embedder
        self._generator = generator
        self._verifier = verifier
        self._answer_verifier = answerability_verifier if answerability_verifier is not None else verifier
        self._index_verifier = index_verifier
        self._index_adapter_fits: dict[str, bool] = {}  # index version -> index.answerability_adapter applies
        self._points: dict[str, tuple[float, float] | None] = {}  # index version -> index.operating_point if it fits
        # read now: a missing or malformed file stops the assistant (or the server) before any model loads
        self._point_file = operating.load(resolve_path(config.index.operating_point)) \
            if config.index.operating_point else None
        self._reranker: tuple[tuple[str, bool], Any] | None = None  # (retrieval.reranker, int8) -> DistilledReranker
        self._calibration: conf.Calibration | None = None
        self._index: HybridIndex | None = None
        self._index_lock = threading.RLock()
        self._pinned = threading.local()  # the version a running query started with, per thread
        self.index_root = resolve_path(config.index.dir)
        self.cache_dir = resolve_path(config.models.cache_dir)

    @classmethod
    def from_config(cls, path: str | Path | None = None, overrides: list[str] | None = None,
                    **kwargs: Any) -> Assistant:
        """An assistant for the preset at ``path`` (default configs/default.yaml); builds nothing."""
        return cls(load_config(path, overrides), **kwargs)

    @classmethod
    def open(cls, config: AppConfig | str | Path | None = None, overrides: list[str] | None = None,
             build_missing: bool = True, **kwargs: Any) -> Assistant:
        """An assistant ready to answer: with ``build_missing``, :meth:`ensure_index` runs first.

        ``config``: an :class:`AppConfig`, or a preset path (``overrides`` apply to it).
        """
        if not isinstance(config, AppConfig):
            config = load_config(config, overrides)
        assistant = cls(config, **kwargs)
        if build_missing:
            assistant.ensure_index()
        return assistant

    def ensure_index(self) -> dict[str, Any] | None:
        """Build the demo index when there is none and ``index.auto_build_demo`` allows it (one-time).

        Returns the new manifest, or None when nothing was built. The only place an assistant builds.
        """
        return IndexJobs.of(self).build_demo()

    def check_input(self, question: str, patient_id: str | None = None, top_k: int | None = None,
                    top_k_name: str = "--top-k") -> None:
        """The checks that need no model or index (InputError on bad input): run before anything loads."""
        self._validate_question(question)
        clean_patient_id(patient_id)
        if top_k is not None and not 1 <= top_k <= 50:
            raise InputError(f"{top_k_name} must be between 1 and 50")

    # -- components -------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            cfg = self.config.embedder
            self._embedder = load_embedder(cfg.model, self.cache_dir, cfg.batch_size, cfg.max_length, cfg.dtype)
        return self._embedder

    @property
    def generator(self) -> Backend:
        """The configured generation backend (``generator.backend``), loaded on first use."""
        if self._generator is None:
            self._generator = load_backend(self.config.generator, self.cache_dir)
        return self._generator

    @property
    def verifier(self) -> Verifier | None:
        """The evidence verifier, or None when ``verifier.enabled`` is false."""
        cfg = self.config.verifier
        if not cfg.enabled:
            return None
        if self._verifier is None:
            self._verifier = self._load_verifier(cfg.adapter)
        return self._verifier

    def _load_verifier(self, adapter: str, model: str | None = None) -> Verifier:
        """The verifier encoder (``model``, default ``verifier.model``) with ``adapter`` (the claim-support,
        answerability or index adapter)."""
        cfg = self.config.verifier
        return Verifier(resolve(model or cfg.model, self.cache_dir).path, resolve_path(adapter),
                        batch_size=cfg.batch_size)

    @property
    def answerability_verifier(self) -> Verifier | None:
        """The verifier judging answerability: ``verifier.answerability_adapter`` when set, else :attr:`verifier`."""
        cfg = self.config.verifier
        if not cfg.enabled or not cfg.answerability_adapter:
            return self.verifier
        if self._answer_verifier is None:
            self._answer_verifier = self._load_verifier(cfg.answerability_adapter, cfg.answerability_model)
        return self._answer_verifier

    @property
    def gate_verifier(self) -> Verifier | None:
        """The verifier judging answerability *on this index*: ``index.answerability_adapter`` (adapted to this
        index's documents, ``finetune/verifier_index.py``) when the loaded version holds exactly the documents it
        was adapted on, else :attr:`answerability_verifier`."""
        if not self.config.verifier.enabled or not self.config.index.answerability_adapter:
            return self.answerability_verifier
        if not self._index_adapter_applies():
            return self.answerability_verifier
        if self._index_verifier is None:
            self._index_verifier = self._load_verifier(self.config.index.answerability_adapter)
        return self._index_verifier

    def _index_adapter_applies(self) -> bool:
        """Whether ``index.answerability_adapter`` was adapted on this index version's documents (checked once per
        version; a mismatch is logged once, with what to run)."""
        index = self.index
        fits = self._index_adapter_fits.get(index.version)
        if fits is None:
            path = resolve_path(str(self.config.index.answerability_adapter))
            why = adapter_mismatch(path, index.manifest)
            fits = why is None
            if why:
                log.warning("index.answerability_adapter %s is not used on index %s (%s): the general verifier gates "
                            "instead; adapt it again with `python -m finetune.verifier_index --sources ...` or set "
                            "index.answerability_adapter=null", path, index.version, why)
            self._index_adapter_fits[index.version] = fits
        return fits

    def operating_point(self, index: HybridIndex | None = None) -> tuple[float, float]:
        """The (gate, confidence threshold) on ``index`` (the loaded version by default): ``index.operating_point``
        when it was chosen on exactly this version's documents with the calibration in use, else
        ``verifier.answerable_min`` and ``confidence.abstain_below`` (checked once per version; a mismatch is logged
        once, with what to run)."""
        general = (self.config.verifier.answerable_min, self.config.confidence.abstain_below)
        point = self._point_file
        if point is None:
            return general
        index = index or self.index
        if index.version not in self._points:
            why = point.mismatch_for(index.manifest, self.config)
            if why:
                log.warning("index.operating_point %s is not used on index %s (%s): verifier.answerable_min and "
                            "confidence.abstain_below apply; choose it again with `python -m eval.trust_operating "
                            "--rows ... --out FILE` or set index.operating_point=null", point.path, index.version, why)
            self._points[index.version] = None if why else (point.answerable_min, point.abstain_below)
        return self._points[index.version] or general

    @property
    def calibration(self) -> conf.Calibration | None:
        path = self.config.confidence.calibration
        if path is None:
            return None
        if self._calibration is None:
            calibration = conf.load_calibration(resolve_path(path))
            why = provenance.gate_mismatch(calibration.meta.get("gate_verifier"), self.config)
            if why:
                raise ConfigError(f"confidence.calibration {path} does not fit this verifier: {why}; set "
                                  "confidence.calibration to the file fitted for it, or refit with `python app.py "
                                  "eval trust fit`")
            self._calibration = calibration
        return self._calibration

    @property
    def index(self) -> HybridIndex:
        """The loaded index version (loads the current one on first use; a missing index is an error)."""
        pinned = getattr(self._pinned, "index", None)
        if pinned is not None:
            return pinned
        with self._index_lock:
            if self._index is None:
                read_manifest(self.index_root)  # a missing/corrupt index fails before any model loads
                self._index = HybridIndex.load(self.index_root, expect_embedder=embedder_manifest(self.embedder),
                                             store_url=self.config.index.postgres_url)
            return self._index

    def _refresh(self) -> None:
        """Pick up a newly published version without restarting (checked once per query, not per access)."""
        if self._index is not None and current_version(self.index_root) not in (None, self._index.version):
            with self._index_lock:
                if self._index is not None and current_version(self.index_root) not in (None, self._index.version):
                    self.reload()

    def reload(self) -> None:
        """Load the current version now. Queries already running keep the version they started with."""
        with self._index_lock:
            self._index = HybridIndex.load(self.index_root, expect_embedder=embedder_manifest(self.embedder),
                                             store_url=self.config.index.postgres_url)

    @contextmanager
    def _pin(self, index: HybridIndex | None = None) -> Iterator[HybridIndex]:
        """Run one query against one version, even if another thread reloads meanwhile.

        ``index``: the version a :class:`Prepared` question was retrieved from (its answer is
        checked against the same passages, whichever thread finishes it).
        """
        if getattr(self._pinned, "index", None) is not None:  # nested (ask -> retrieve)
            yield self._pinned.index
            return
        if index is None:
            self._refresh()
        self._pinned.index = index if index is not None else self.index
        try:
            yield self._pinned.index
        finally:
            self._pinned.index = None

    def forget_index(self) -> None:
        """Drop the loaded version (after a publish or rollback): the next use loads the current one."""
        with self._index_lock:
            self._index = None

    # -- querying ----------------------------------------------------------------------------
    def _validate_question(self, question: str) -> str:
        return clean_question(question, self.config.query.max_question_chars)

    def _validate(self, question: str, patient_id: str | None) -> tuple[str, str | None]:
        """The cleaned question and patient id; an id with no records in the index is refused."""
        q = self._validate_question(question)
        pid = clean_patient_id(patient_id)
        if pid is not None and pid not in self.index.patients:
            raise UnknownPatientError(f"no records for patient '{pid}' in index version "
                                      f"{self.index.version}; check the id (`python app.py index status`)")
        return q, pid

    def retriever(self) -> HybridRetriever:
        r = self.config.retrieval
        reranker = self.rerank_scorer() if r.rerank else None
        return HybridRetriever(self.index, self.embedder, r.dense_k, r.bm25_k, r.rrf_k, r.dense_weight,
                               r.bm25_weight, r.merge_threshold, r.top_k, r.patient_slots, r.fusion, r.merge_score,
                               r.expand_abbreviations, reranker, r.rerank_top_n, r.rerank_weight,
                               overlap=None if r.concurrent_bm25 else False)

    def rerank_scorer(self) -> Scorer:
        """What ``retrieval.rerank`` reorders by: the verifier's answerability, or the distilled reranker named by
        ``retrieval.reranker`` (a folder; a missing or unreadable one is an InputError)."""
        r = self.config.retrieval
        if r.reranker == "verifier":
            verifier = self.gate_verifier
            if verifier is None:
                raise ConfigError("retrieval.rerank needs the verifier (retrieval.reranker=verifier); set "
                                  "verifier.enabled=true, retrieval.reranker=<a distilled reranker folder> or "
                                  "retrieval.rerank=false")
            return verifier.answerability
        if self._reranker is None or self._reranker[0] != (r.reranker, r.reranker_int8):
            from rag.cross_encoder import DistilledReranker

            self._reranker = ((r.reranker, r.reranker_int8),
                              DistilledReranker(resolve_path(r.reranker), int8=r.reranker_int8))
        return self._reranker[1].answerability

    def retrieve(self, question: str, patient_id: str | None = None, top_k: int | None = None) -> Retrieval:
        with self._pin():
            q, pid = self._validate(question, patient_id)
            return self.retriever().retrieve(q, pid, top_k)

    def ask(self, question: str, patient_id: str | None = None, top_k: int | None = None, generate: bool = True,
            on_text: Callable[[str], None] | None = None, withhold: set[str] | None = None) -> Answer:
        """Answer ``question`` from the index, citing sources, or abstain.

        ``withhold`` (evaluation only) hides these document ids from retrieval, e.g. the gold
        answer's page, to check that the assistant abstains without it.
        Thread-safe: the whole answer comes from the index version current when it started.
        """
        self.check_input(question, patient_id, top_k)  # cheap checks before any model or index is loaded
        t_all = time.perf_counter()
        with self._pin():
            step = self._prepare(question, patient_id, top_k, generate, t_all, withhold)
            if isinstance(step, Answer):
                return step
            answer = self._finish(step, self.generate(step, on_text))
            again = self.second_try(step, answer)
            return answer if again is None else self._finish(again, self.generate(again, on_text))

    # -- the same pipeline in stages, for a server that retrieves in parallel and generates in one queue --
    def prepare(self, question: str, patient_id: str | None = None, top_k: int | None = None,
                generate: bool = True) -> Answer | Prepared:
        """Validate, retrieve and gate: an :class:`Answer` when no generation is needed (evidence only,
        an abstention), else the :class:`Prepared` prompt for :meth:`generate` and :meth:`finish`.

        Thread-safe like :meth:`ask`; the Prepared question keeps the index version it was retrieved from.
        """
        self.check_input(question, patient_id, top_k, top_k_name="top_k")
        with self._pin():
            return self._prepare(question, patient_id, top_k, generate, time.perf_counter())

    def generate(self, prepared: Prepared, on_text: Callable[[str], None] | None = None) -> Generation:
        """The generator's reply to a prepared prompt (the model is not thread-safe: call from one thread)."""
        gen_cfg = self.config.generator
        return self.generator.generate(prepared.messages, gen_cfg.max_new_tokens, gen_cfg.temperature, on_text)

    def generate_batch(self, prepared: list[Prepared], should_stop: Callable[[], bool] | None = None
                       ) -> list[Generation]:
        """Greedy replies to several prepared prompts in one batch (same thread rule as :meth:`generate`);
        ``should_stop`` ends the batch early (the server: every request in it was abandoned)."""
        messages, max_new = [p.messages for p in prepared], self.config.generator.max_new_tokens
        if should_stop is None:
            return self.generator.generate_batch(messages, max_new)
        return self.generator.generate_batch(messages, max_new, should_stop=should_stop)

    def finish(self, prepared: Prepared, out: Generation) -> Answer:
        """Check the reply's citations against the prepared question's sources and score it."""
        with self._pin(prepared.index):
            return self._finish(prepared, out)

    def second_try(self, prepared: Prepared, first: Answer) -> Prepared | None:
        """With ``generator.second_try``: the prompt for one more try when ``first`` was withheld after the gate
        because the generator found nothing or no sentence was supported, else None.

        The second prompt shows only the source the answerability model ranks best. A 0.5B generator shown
        four sections often answers from the wrong one or finds nothing, where the one section that answers
        is enough (measured on the trust dev split, BENCHMARKS.md). Its answer goes through every check
        again; the first answer is kept on it (``first_try``) and it says it is a second try.
        """
        if (not self.config.generator.second_try or prepared.first_try is not None or not first.abstained
                or first.abstain_reason not in (MODEL_FOUND_NOTHING, NOTHING_SUPPORTED)
                or len(prepared.units) < 2 or not prepared.answerable):
            return None
        best = max(range(len(prepared.units)), key=lambda i: prepared.answerable[i])
        with self._pin(prepared.index):
            unit = prepared.units[best]
            sources = self._prompt_sources([unit])
        signals = {k: v for k, v in prepared.signals.items()
                   if k in ("retrieval", "agreement", "answerability", "answerability_logit", "answerable_p")}
        signals["second_try"] = 1.0
        timings = {**{k: v for k, v in prepared.timings.items() if k.startswith("retrieval_") or k == "load"},
                   **{f"first_try_{k}": v for k, v in first.timings_ms.items()}}
        return Prepared(prepared.question, [unit], build_messages(prepared.question, sources, prepared.patient_id),
                        signals, timings, prepared.base, prepared.t_all, [prepared.answerable[best]],
                        prepared.index, first)

    def ask_many(self, questions: list[str], patient_id: str | None = None, top_k: int | None = None,
                 withhold: list[set[str]] | None = None, batch_size: int = 8,
                 on_answer: Callable[[int, Answer], None] | None = None,
                 patient_ids: list[str | None] | None = None) -> list[Answer]:
        """Answer several questions, generating ``batch_size`` replies per forward pass (greedy).

        Same pipeline as :meth:`ask`; batching only changes throughput (several times faster on
        a CPU, where decoding one sequence leaves the cores waiting on memory). Per-answer
        ``generation`` timings are the batch's time. ``patient_ids`` gives each question its own
        patient (instead of ``patient_id`` for all).
        """
        if withhold is not None and len(withhold) != len(questions):
            raise InputError("withhold needs one set of document ids per question")
        if patient_ids is not None and len(patient_ids) != len(questions):
            raise InputError("patient_ids needs one patient id (or None) per question; pass a list as long as "
                             "questions")
        answers: list[Answer | None] = [None] * len(questions)
        with self._pin():
            for start in range(0, len(questions), batch_size):
                pending: list[tuple[int, Prepared]] = []
                for i in range(start, min(start + batch_size, len(questions))):
                    self._validate_question(questions[i])
                    step = self._prepare(questions[i], patient_ids[i] if patient_ids else patient_id, top_k, True,
                                         time.perf_counter(), withhold[i] if withhold else None)
                    if isinstance(step, Answer):
                        answers[i] = step
                    else:
                        pending.append((i, step))
                while pending:  # the first tries, then the second tries of those withheld (generator.second_try)
                    outs = self.generate_batch([p for _, p in pending])
                    again: list[tuple[int, Prepared]] = []
                    for (i, p), out in zip(pending, outs, strict=True):
                        answers[i] = a = self._finish(p, out)
                        # generation and total are then the whole batch's time, not this answer's alone
                        a.timings_ms["batch_size"] = len(pending)
                        if (retry := self.second_try(p, a)) is not None:
                            again.append((i, retry))
                    pending = again
                if on_answer is not None:
                    for i in range(start, min(start + batch_size, len(questions))):
                        on_answer(i, answers[i])  # type: ignore[arg-type]
        return [a for a in answers if a is not None]

    def _retrieve(self, q: str, pid: str | None, top_k: int | None, withhold: set[str] | None) -> Retrieval:
        retriever = self.retriever()
        if not withhold:
            return retriever.retrieve(q, pid, top_k)
        idx = self.index
        allowed = idx.allowed_mask(pid)
        allowed[[i for i, c in enumerate(idx.children) if c.doc_id in withhold]] = False
        t = time.perf_counter()
        qv = self.embedder.encode_queries([retriever.dense_query(q)])[0].astype(np.float32)
        ret = retriever.search(q, qv, pid, top_k, allowed=allowed)
        ret.timings_ms = {"query_encode": (time.perf_counter() - t) * 1000, **ret.timings_ms}
        return ret

    def _prepare(self, question: str, patient_id: str | None, top_k: int | None, generate: bool, t_all: float,
                 withhold: set[str] | None = None) -> Answer | Prepared:
        """Retrieval and the prompt; an Answer already when no generation is needed."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        _ = self.index, self.embedder  # load before timing retrieval
        if generate:
            _ = self.generator
        timings["load"] = (time.perf_counter() - t) * 1000
        q, pid = self._validate(question, patient_id)
        ret = self._retrieve(q, pid, top_k, withhold)
        timings.update({f"retrieval_{k}": v for k, v in ret.timings_ms.items()})
        signals = self._retrieval_signals(ret, self.embedder.spec, q)
        cfg = self.config.confidence
        base: dict[str, Any] = {"question": q, "index_version": self.index.version, "models": self._models(generate),
                                "patient_id": pid}

        def unanswered(**fields: Any) -> Answer:
            """An answer decided before any generation (no source, the gate, evidence only)."""
            timings["total"] = (time.perf_counter() - t_all) * 1000
            return Answer(timings_ms=timings, confidence_signals=signals, generated=False, **fields, **base)

        if not ret.units:
            return unanswered(answer=ABSTAIN_MESSAGE, abstained=True, confidence=0.0, confidence_label="low",
                              citations=[], sentences=[], abstain_reason="no source retrieved")
        # What the generator will see: the gate asks whether *these* sources answer.
        sources = self._prompt_sources(ret.units) if generate else []
        shown = ret.units[: len(sources)] if generate else ret.units
        verifier = self.gate_verifier
        answerable = self._gate(verifier, q, shown, signals, timings) if verifier is not None else []
        gate = self.operating_point()[0]
        gate_value = signals.get("answerable_p", signals.get("answerability", 1.0))
        if generate and verifier is not None and gate_value < gate:
            return unanswered(
                answer=ABSTAIN_MESSAGE, abstained=True, confidence=0.0, confidence_label="low", sentences=[],
                citations=[self._citation(n, u, None, answerable) for n, u in enumerate(ret.units, start=1)],
                abstain_reason=f"no retrieved passage answers the question (answerability gate "
                               f"{gate_value:.2f} < {gate:.2f})")
        sibling = other_variant(q, [u.chunk.title for u in shown]) \
            if generate and self.config.verifier.subject_variant else None
        if sibling is not None:
            return unanswered(
                answer=ABSTAIN_MESSAGE, abstained=True, confidence=0.0, confidence_label="low", sentences=[],
                citations=[self._citation(n, u, None, answerable) for n, u in enumerate(ret.units, start=1)],
                abstain_reason=f"the retrieved sources are about another variant of the subject asked "
                               f"({sibling!r})")
        if not generate or signals["retrieval"] < cfg.retrieval_floor:
            citations = [self._citation(n, u, None, answerable) for n, u in enumerate(ret.units, start=1)]
            c = conf.combine(signals, cfg)
            weak = signals["retrieval"] < cfg.retrieval_floor
            return unanswered(
                answer=ABSTAIN_MESSAGE if weak else "Evidence only (--no-generate): see the numbered sources.",
                abstained=weak, confidence=c, confidence_label=conf.label(c, cfg), citations=citations,
                sentences=[],
                abstain_reason="retrieval too weak: no indexed passage is close to the question" if weak else None)
        return Prepared(q, shown, build_messages(q, sources, pid), signals, timings, base, t_all, answerable,
                        self.index)

    def _models(self, generate: bool) -> dict[str, str | None]:
        """The models an answer names (the generator, its backend and dtype only when it generates)."""
        gen = self._generator if generate else None
        models: dict[str, str | None] = {"embedder": self.embedder.model_id,
                                         "generator": gen.model_id if gen else None,
                                         "adapter": gen.adapter if gen else None}
        info = getattr(gen, "info", None)  # test doubles may have none
        if isinstance(info, dict):
            models.update({f"generator_{k}": str(v) for k, v in info.items()})
        return models

    def _prompt_sources(self, units: list[Unit]) -> list[PromptSource]:
        """The numbered sources that fit the generator's context, in retrieval order."""
        return fit_sources([PromptSource(n, u.chunk.title, u.chunk.section, u.chunk.kind, u.chunk.patient_id,
                                         u.chunk.text) for n, u in enumerate(units, start=1)],
                           self.generator.count_tokens, self.config.generator.max_context_tokens)

    def _gate(self, verifier: Verifier, question: str, shown: list[Unit], signals: dict[str, float],
              timings: dict[str, float]) -> list[float]:
        """Answerability of each shown source; sets the gate's signals (and ``answerable_p`` with a gate model)."""
        t = time.perf_counter()
        answerable = self._answerability(verifier, question, shown)
        signals["answerability"] = max(answerable, default=0.0)
        signals["answerability_logit"] = conf.answerability_logit(signals["answerability"])
        gate_model = self.calibration.meta.get("gate") if self.calibration is not None else None
        if gate_model is not None and gate_model.usable(signals):
            signals["answerable_p"] = gate_model.probability(signals)
        timings["answerability"] = (time.perf_counter() - t) * 1000
        return answerable

    def _finish(self, p: Prepared, out: Generation) -> Answer:
        """Check the generated answer's citations, score confidence, and answer or abstain."""
        units, signals, timings = p.units, p.signals, p.timings
        cfg = self.config.confidence
        _record_generation(timings, out)
        signals["generation"] = conf.generation_probability(out.token_probs)
        signals.setdefault("second_try", 0.0)  # 1 on a second try (a calibration may use it)
        signals["patient_scoped"] = 1.0 if p.patient_id else 0.0  # asked about one patient's record

        t = time.perf_counter()
        text, removed = clean_markers(out.text, set(range(1, len(units) + 1)))
        model_abstained = is_abstention(text) or not text
        support = self._support(text, units, p.question, p.patient_id) if not model_abstained else []
        # Sources and questions are data, never instructions: an answer that says its rules or its
        # patient scope changed was steered by text in them, so it is refused whatever else it says.
        steered = [s for s in support if claims_rule_change(s.text)]
        for s in steered:
            s.supported = False
            s.checks["rules"] = False
        restated = self._check_unseen_terms(p.question, support)
        answer_verifier = self.gate_verifier
        if answer_verifier is not None and any(s.supported for s in support):
            # The answer read as a whole (a calibration signal): supported sentences can still miss the question.
            signals["answer_answerability"] = answer_answerability(
                answer_verifier, p.question, [s.text for s in support if s.supported])
        timings["citation_check"] = (time.perf_counter() - t) * 1000
        signals["support"] = (sum(s.supported for s in support) / len(support)) if support else 0.0
        if self.verifier is not None:
            signals["support_prob"] = float(np.mean([max(s.score, 0.0) for s in support])) if support else 0.0
        calibration = self.calibration if cfg.calibrated_answers else None
        c = conf.combine(signals, cfg, calibration)
        reason = self._abstain_reason(p, support, model_abstained, bool(steered),
                                      conf.decision_score(signals, cfg, calibration), restated)
        citations = self._cited(units, support, p.answerable)
        sentences = [SentenceRecord(_with_markers(strip_markers(s.text), s.citations) if s.attributed else s.text,
                                    s.citations,
                                    s.supported, round(s.score, 4), s.attributed, dict(s.checks),
                                    None if s.cosine is None else round(s.cosine, 4), self._spans(units, s))
                     for s in support]
        if sentences and out.new_tokens >= self.config.generator.max_new_tokens and unfinished(sentences[-1].text):
            sentences[-1].cut_off = True  # stopped at the token limit mid-sentence: shown ending in "…"
        # Only supported sentences are shown: an unsupported one stays in ``sentences`` (and the
        # draft) for audit, never in the answer a clinician reads as sourced.
        shown = [mark_cut(s.text) if s.cut_off else s.text for s in sentences if s.supported]
        if shown:
            text = " ".join(shown)
        timings["total"] = (time.perf_counter() - p.t_all) * 1000
        return Answer(
            answer=ABSTAIN_MESSAGE if reason else text, abstained=reason is not None, confidence=c,
            confidence_label=conf.label(c, cfg) if reason is None else "low", citations=citations,
            sentences=sentences, timings_ms=timings, abstain_reason=reason, confidence_signals=signals,
            removed_citations=removed, draft=out.text, first_try=p.first_try, **p.base)

    def _check_unseen_terms(self, question: str, support: list[Any]) -> list[str]:
        """The index-vocabulary checks (:mod:`rag.coverage`), recorded on every sentence for replay whatever the
        switches: a sentence restating a question word no indexed passage contains (``verifier.unseen_terms``:
        unsupported, and the answer is withheld in :meth:`_abstain_reason`), and one bringing a word neither the
        index nor the question holds (``verifier.novel_terms``: unsupported). Returns the question words restated."""
        stats = getattr(self.index, "term_stats", None)
        if stats is None or not support:
            return []
        restated: set[str] = set()
        for s, (asked, novel) in zip(support, vocabulary_checks([strip_markers(s.text) for s in support], question,
                                                                 stats), strict=True):
            if novel:
                s.checks["novel_terms"] = False  # a word no source can have stated (verifier.novel_terms)
                if self.config.verifier.novel_terms:
                    s.supported = False
            if asked:
                s.checks["unseen_terms"] = False
                restated.update(asked)
                if self.config.verifier.unseen_terms:
                    s.supported = False
        return sorted(restated)

    def _abstain_reason(self, p: Prepared, support: list[Any], model_abstained: bool, steered: bool,
                        confidence: float, restated: Sequence[str] = ()) -> str | None:
        """Why the checked answer is withheld (the first rule that applies), or None to answer."""
        cfg = self.config.confidence
        if model_abstained:
            return MODEL_FOUND_NOTHING
        if steered:
            return ("the answer claims its rules or scope changed (an instruction inside the question or a source?); "
                    "refused")
        if self.config.verifier.unseen_terms and restated:
            # The generator wrote the asked subject into a claim and no indexed source names it: the sources are
            # about something else, so their other (supported) sentences do not answer either, and a second try
            # would read the same sources (none is made).
            return (f"the question asks about {', '.join(repr(t) for t in restated)}, which no indexed source "
                    "mentions")
        if not any(s.supported for s in support):
            return NOTHING_SUPPORTED
        if cfg.record_rules and p.patient_id and (
                missed := unanswered_measures(p.question, [s.text for s in support if s.supported])):
            # A record question answered with another field's (true, cited) value is not an answer.
            return f"no supported sentence gives the {', '.join(sorted(missed))} the question asks about"
        threshold = self.operating_point(p.index)[1]
        if confidence < threshold:
            return f"confidence {confidence:.2f} is below the abstention threshold {threshold:.2f}"
        return None

    def _cited(self, units: list[Unit], support: list[Any], answerable: list[float]) -> list[Citation]:
        """One citation per source, spanning the passage that best supports a sentence citing it."""
        best: dict[int, tuple[float, int]] = {}
        for s in support:
            for n, i in s.best.items():
                if n not in best or s.score > best[n][0]:
                    best[n] = (s.score, i)
        return [self._citation(n, u, best.get(n, (0.0, None))[1], answerable) for n, u in enumerate(units, start=1)]

    # -- helpers -----------------------------------------------------------------------------
    def _spans(self, units: list[Unit], s: Any) -> list[dict[str, Any]]:
        """The passage of each cited source that best supports sentence ``s`` (its character span)."""
        out = []
        for n in s.citations:
            if n in s.best and 1 <= n <= len(units):
                rows = self._passages(units[n - 1])
                if 0 <= s.best[n] < len(rows):
                    c = self.index.children[rows[s.best[n]]]
                    out.append({"n": n, "chunk_id": c.chunk_id, "start": c.start, "end": c.end, "text": c.text})
        return out

    def _retrieval_signals(self, ret: Retrieval, spec: EmbedderSpec, question: str) -> dict[str, float]:
        idx = self.index
        shown = {h.chunk_id for u in ret.units for h in u.hits}
        top_cos = max((s for cid, s in ret.dense if cid in shown), default=None)
        if top_cos is None:
            top_cos = max((s for _, s in ret.dense), default=spec.sim_floor)
        parent_of = lambda cid: idx.children[idx.child_pos[cid]].parent_id or cid  # noqa: E731
        return {
            "retrieval": conf.retrieval_strength(top_cos, spec.sim_floor, spec.sim_ceiling),
            "agreement": conf.agreement([parent_of(c) for c, _ in ret.dense], [parent_of(c) for c, _ in ret.bm25]),
            # Does the question name words that the retrieved sources, or the whole index, never use?
            **(lexical_signals(question, (f"{u.chunk.title}\n{u.chunk.text}" for u in ret.units), stats)
               if (stats := getattr(idx, "term_stats", None)) is not None else {}),
        }

    def _answerability(self, verifier: Verifier, question: str, units: list[Unit]) -> list[float]:
        """Per source: the best probability that one of its retrieved passages answers the question."""
        idx = self.index
        k = self.config.verifier.passages_per_source
        rows = [(n, idx.children[idx.child_pos[h.chunk_id]].context_text())
                for n, u in enumerate(units) for h in u.hits[:k] if h.chunk_id in idx.child_pos]
        if self.config.verifier.expand_question:
            question = expand(question).dense_text  # verifier.expand_question: shorthand written out
        probs = verifier.answerability(question, [text for _, text in rows])
        best = [0.0] * len(units)
        for (n, _), pr in zip(rows, probs, strict=True):
            best[n] = max(best[n], float(pr))
        return best

    def _passages(self, unit: Unit) -> list[int]:
        """Index rows of the child passages a source consists of (all children of a merged parent)."""
        idx = self.index
        if unit.merged:
            return [idx.child_pos[c] for c in unit.chunk.child_ids if c in idx.child_pos]
        return [idx.child_pos[unit.chunk.chunk_id]]

    def _support(self, text: str, units: list[Unit], question: str, patient_id: str | None = None) -> list[Any]:
        sentences = split_sentences(text)
        if not sentences:
            return []
        svec = self.embedder.encode_queries([strip_markers(s) or s for s in sentences])
        source_vectors = {n: np.stack([self.index.dense.reconstruct(int(r)) for r in self._passages(u)])
                          for n, u in enumerate(units, start=1)}
        threshold = self.config.confidence.support_threshold
        if threshold is None:
            threshold = self.embedder.spec.support_threshold
        source_texts = {n: [self.index.children[r].context_text() for r in self._passages(u)]
                        for n, u in enumerate(units, start=1)}
        records = {n for n, u in enumerate(units, start=1) if u.chunk.patient_id is not None}
        scores = None
        verifier = self.verifier
        if verifier is not None:
            threshold = self.config.verifier.support_min
            scores = self._support_scores(verifier, question, sentences, source_texts)
        return check_support(text, svec, source_vectors, threshold,
                             attribute_uncited=self.config.confidence.attribute_uncited,
                             source_texts=source_texts, exempt_numbers=numbers_in(question),
                             record_sources=records if patient_id else None,
                             about_patient=about_patient(patient_id) if patient_id else None,
                             scores=scores, record_rules=self.config.confidence.record_rules,
                             cosine_min=self.config.verifier.support_cosine if verifier is not None else None,
                             statement_checks=self.config.verifier.statement_checks,
                             verbatim=self.config.verifier.verbatim_support,
                             record_polarity=self.config.verifier.record_polarity,
                             verbatim_recite=self.config.verifier.verbatim_recite,
                             recite_supported=self.config.verifier.recite_supported,
                             verbatim_strict=self.config.verifier.verbatim_strict)

    def _support_scores(self, verifier: Verifier, question: str, sentences: list[str],
                        source_texts: dict[int, list[str]]) -> list[dict[int, np.ndarray]]:
        """Support probability of each sentence against every passage of the sources it could cite.

        A sentence is scored against the passages of the sources it cites, and (for attribution)
        against every shown source when it cites none that exists.
        """
        out: list[dict[int, np.ndarray]] = [
            {n: np.zeros(len(ps), dtype=np.float32) for n, ps in source_texts.items()} for _ in sentences]
        claims = [strip_markers(s) or s for s in sentences]
        cited = [[n for n in dict.fromkeys(parse_markers(s)) if n in source_texts] for s in sentences]

        def run(pairs: list[tuple[int, int]]) -> None:
            jobs = [(i, n, j) for i, n in pairs for j in range(len(source_texts[n]))]
            probs = verifier.support(question, [claims[i] for i, _, _ in jobs],
                                     [source_texts[n][j] for _, n, j in jobs])
            for (i, n, j), pr in zip(jobs, probs, strict=True):
                out[i][n][j] = pr

        # The cited sources first; the others only for sentences they leave unsupported (attribution).
        run([(i, n) for i in range(len(sentences)) for n in cited[i]])
        if self.config.confidence.attribute_uncited:
            need = [i for i in range(len(sentences))
                    if not cited[i] or max(float(out[i][n].max(initial=0.0)) for n in cited[i])
                    < self.config.verifier.support_min]
            run([(i, n) for i in need for n in source_texts if n not in cited[i]])
        return out

    def _citation(self, n: int, unit: Unit, best_passage: int | None, answerable: list[float] | None = None
                  ) -> Citation:
        """Cite the child span: the passage that best supports the answer, else the top retrieved child."""
        idx = self.index
        if best_passage is not None:
            child = idx.children[self._passages(unit)[best_passage]]
        else:
            child = idx.children[idx.child_pos[unit.hits[0].chunk_id]]
        return Citation(n=n, doc_id=child.doc_id, chunk_id=child.chunk_id, title=child.title, source=child.source,
                        kind=child.kind, patient_id=child.patient_id, section=child.section, start=child.start,
                        end=child.end, score=round(unit.score, 6), text=child.text, merged=unit.merged,
                        parent_id=child.parent_id,
                        answerability=round(answerable[n - 1], 4) if answerable and n <= len(answerable) else None)


@dataclass
class Prepared:
    """A question retrieved, gated and prompted, waiting for its generation (see :meth:`Assistant.prepare`)."""

    question: str
    units: list[Unit]
    messages: list[dict[str, str]]
    signals: dict[str, float]
    timings: dict[str, float]
    base: dict[str, Any]
    t_all: float
    answerable: list[float]
    index: HybridIndex  # the version retrieved from: the answer is checked against the same passages
    first_try: Answer | None = None  # set on a second try (Assistant.second_try): the withheld first answer

    @property
    def patient_id(self) -> str | None:
        return self.base.get("patient_id")


def _record_generation(timings: dict[str, float], out: Generation) -> None:
    timings["generation"] = out.total_ms
    timings["first_token"] = out.first_token_ms
    # Decode speed after the first token (prefill time is reported as first_token).
    timings["decode_tokens_per_s"] = max(out.new_tokens - 1, 0) / max((out.total_ms - out.first_token_ms) / 1000,
                                                                         1e-9)
    timings["new_tokens"] = out.new_tokens
    timings["prompt_tokens"] = out.prompt_tokens
    timings["prompt_tokens_cached"] = out.cached_tokens


def _with_markers(sentence: str, ns: list[int]) -> str:
    """Insert attributed markers before the sentence's closing punctuation."""
    marks = "".join(f"[{n}]" for n in ns)
    body = sentence.rstrip()
    if body and body[-1] in ".!?":
        return f"{body[:-1]} {marks}{body[-1]}"
    return f"{body} {marks}"


__all__ = ["ABSTAIN_MESSAGE", "ABSTAIN_TOKEN", "Assistant", "Prepared"]
