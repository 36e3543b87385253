"""The warm answering engine behind the HTTP API: models loaded once, retrieval in a thread pool,
generation in one thread that batches waiting questions.

The generator is not thread-safe (one model, one KV cache at a time), so every reply is made by
one worker thread. Retrieval, the answerability gate and the citation check run in a small pool
meanwhile, so a question is retrieved while another is being generated. The embedder and the
verifier are shared by those threads; each is called under its own lock (a fast tokenizer
raises "Already borrowed" when two threads change its padding at once), held only for the few
milliseconds of an encode, never for a generation.

Admission control (serve/admission.py): a question entering the generator queue is refused at once
(:class:`Overloaded`, HTTP 429) when its answer is expected after ``serve.request_timeout_s``, from the
queue and the measured batch times.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rag.answer import Answer
from rag.assistant import Assistant, Prepared
from rag.config import AppConfig
from rag.errors import CDSError
from rag.generate import Generation, stop_guard
from serve.admission import BatchClock, Estimate, batches_ahead
from serve.metrics import Metrics

log = logging.getLogger(__name__)


class Busy(Exception):
    """Too many questions admitted: the client should retry later (HTTP 429, ``Retry-After``)."""

    def __init__(self, message: str, retry_after_s: int = 5):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(Busy):
    """The generator queue would keep this question past ``serve.request_timeout_s`` (HTTP 429)."""


class NotReady(Exception):
    """Models or index not loaded (yet), or the engine is stopping (HTTP 503)."""


class _Locked:
    """Calls the wrapped model's methods under a lock; attributes pass through."""

    def __init__(self, inner: Any):
        self._inner = inner
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


class _CountingGenerator:
    """The generator, with token counting (used while preparing prompts) on a tokenizer of its own.

    Counting runs in the retrieval threads while the worker thread generates with the shared
    tokenizer; a copy keeps them from touching one Rust tokenizer at once.
    """

    def __init__(self, inner: Any):
        self._inner = inner
        self._lock = threading.Lock()
        tok = getattr(inner, "tokenizer", None)
        self._tokenizer = copy.deepcopy(tok) if tok is not None else None

    def count_tokens(self, text: str) -> int:
        with self._lock:
            if self._tokenizer is None:
                return int(self._inner.count_tokens(text))
            return len(self._tokenizer.encode(text, add_special_tokens=False))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class _Job:
    prepared: Prepared
    future: Future[Generation] = field(default_factory=Future)
    on_text: Callable[[str], None] | None = None  # streamed: generated alone, token by token
    stop: threading.Event = field(default_factory=threading.Event)  # set when its request is abandoned


def _guarded(job: _Job) -> Callable[[str], None]:
    """The job's streaming callback, ending the generation once its request is abandoned."""
    check = stop_guard(job.stop.is_set)
    assert check is not None

    def on_text(text: str) -> None:
        check(text)
        if job.on_text is not None and text:  # "": a heartbeat between prompt chunks (rag.backends.Generator)
            job.on_text(text)

    return on_text


def _all_abandoned(batch: list[_Job]) -> Callable[[], bool]:
    return lambda: all(j.stop.is_set() for j in batch)


class Engine:
    """Answers questions for the API: :meth:`prepare` (pool), :meth:`generate` (the worker), :meth:`finish` (pool)."""

    def __init__(self, config: AppConfig, assistant: Assistant | None = None):
        self.config = config
        self.cfg = config.serve
        self._loader: Assistant | None = assistant if assistant is not None else Assistant(config)
        self.assistant: Assistant | None = None  # set when loaded
        self.pool = ThreadPoolExecutor(self.cfg.retrieval_workers, thread_name_prefix="cds-retrieve")
        self.metrics = Metrics()
        self.load_error: str | None = None
        self.started = time.time()
        self._ready = threading.Event()
        self._stopping = False
        self._jobs: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._admitted = 0
        self._admit_lock = threading.Lock()
        self._by_future: weakref.WeakKeyDictionary[Future[Generation], _Job] = weakref.WeakKeyDictionary()
        self._worker = threading.Thread(target=self._run, name="cds-generate", daemon=True)
        self.clock = BatchClock(self.cfg.admission_prior_s)
        self._running: tuple[int, float] | None = None  # size and start of the batch being generated

    # -- life cycle -----------------------------------------------------------------------------
    def start(self, warm: bool | None = None) -> None:
        """Start the generation worker and load the models (in the background: readyz tells when)."""
        self._worker.start()
        if self.cfg.warmup if warm is None else warm:
            self.pool.submit(self.load)

    def load(self) -> None:
        """Load the index and every model once; the engine is ready afterwards (or records why not)."""
        t = time.perf_counter()
        try:
            a = self._loader
            if a is None:
                return
            a.ensure_index()  # the demo index on first start (index.auto_build_demo)
            _ = a.index, a.calibration  # a missing or damaged index fails here, before any model loads
            verifier = a.verifier
            locked: Any = _Locked(verifier) if verifier is not None else None
            gate_verifier = a.answerability_verifier
            gate_locked: Any = locked if gate_verifier is verifier else _Locked(gate_verifier)
            # the index's own answerability adapter (index.answerability_adapter), when it fits the loaded index
            index_verifier = a.gate_verifier
            index_locked: Any = (None if index_verifier is gate_verifier or index_verifier is None
                                 else _Locked(index_verifier))
            self.assistant = Assistant(a.config, embedder=_Locked(a.embedder),
                                       generator=_CountingGenerator(a.generator),
                                       verifier=locked, answerability_verifier=gate_locked,
                                       index_verifier=index_locked)
            _ = self.assistant.index, self.assistant.calibration
        except CDSError as e:
            self.load_error = str(e)
            log.error("load failed", extra={"event": "load_failed", "error_type": type(e).__name__})
            return
        except Exception as e:  # recorded and reported by readyz, never a silent hang
            self.load_error = f"{type(e).__name__} while loading the models (see the server log)"
            log.exception("load failed", extra={"event": "load_failed", "error_type": type(e).__name__})
            return
        self._loader = None  # its models live on in self.assistant; its copy of the index is let go
        self.metrics.set_gauge("cds_load_seconds", time.perf_counter() - t)
        self._ready.set()
        log.info("ready", extra={"event": "ready", "index_version": self.assistant.index.version,
                                 "load_s": round(time.perf_counter() - t, 2)})

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._stopping

    @property
    def stopping(self) -> bool:
        return self._stopping

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stopping = True
        with self._cond:
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._cond.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def require_ready(self) -> Assistant:
        if self._stopping:
            raise NotReady("the server is shutting down; retry on another instance")
        if self.load_error:
            raise NotReady(f"the server could not load: {self.load_error}")
        if not self._ready.is_set() or self.assistant is None:
            raise NotReady("the models are still loading; retry in a few seconds (GET /readyz says when)")
        return self.assistant

    # -- admission ------------------------------------------------------------------------------
    def admit(self) -> None:
        """Count a question in, or raise :class:`Busy` when ``serve.queue_size`` are already in."""
        with self._admit_lock:
            if self._admitted >= self.cfg.queue_size:
                self.metrics.inc("cds_rejected_total", reason="queue_full")
                raise Busy(f"the server is busy ({self._admitted} questions in progress); retry shortly")
            self._admitted += 1
            self.metrics.set_gauge("cds_questions_in_progress", self._admitted)

    def release(self) -> None:
        with self._admit_lock:
            self._admitted -= 1
            self.metrics.set_gauge("cds_questions_in_progress", self._admitted)

    @property
    def in_progress(self) -> int:
        return self._admitted

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    # -- the three stages -----------------------------------------------------------------------
    def prepare(self, question: str, patient_id: str | None, top_k: int | None, generate: bool) -> Answer | Prepared:
        return self.require_ready().prepare(question, patient_id, top_k, generate)

    def finish(self, prepared: Prepared, out: Generation) -> Answer:
        t = time.perf_counter()
        answer = self.require_ready().finish(prepared, out)
        self.clock.observe_finish(time.perf_counter() - t)
        return answer

    def second_try(self, prepared: Prepared, answer: Answer) -> Prepared | None:
        """The second prompt for a withheld answer (generator.second_try), or None."""
        return self.require_ready().second_try(prepared, answer)

    def generate(self, prepared: Prepared, on_text: Callable[[str], None] | None = None,
                 elapsed_s: float = 0.0) -> Future[Generation]:
        """Queue a prepared question for the generation worker; the future holds its reply.

        ``elapsed_s``: how long its request has run already (retrieval, the gate). Raises
        :class:`Overloaded` when the answer is expected after ``serve.request_timeout_s``
        (:meth:`estimate`), so the client hears it at once rather than as a 504 later.
        """
        if self._stopping:
            raise NotReady("the server is shutting down; retry on another instance")
        job = _Job(prepared, on_text=on_text)
        with self._cond:
            if self.cfg.admission:
                est = self._estimate(self._batchable(job))
                timeout, headroom = self.cfg.request_timeout_s, self.cfg.admission_headroom
                if est.refuse(elapsed_s, timeout, headroom):
                    self.metrics.inc("cds_rejected_total", reason="overloaded")
                    after = est.retry_after(elapsed_s, timeout, headroom)
                    raise Overloaded(f"the generator is busy: an answer now would take about {est.wait_s:.0f} s "
                                     f"({est.batches_ahead} batches ahead), over serve.request_timeout_s "
                                     f"({timeout:g} s) less its headroom ({headroom:.0%}); retry in {after} s "
                                     "(Retry-After)", after)
            self._by_future[job.future] = job
            self._jobs.append(job)
            self.metrics.set_gauge("cds_generation_queue", len(self._jobs))
            self._cond.notify()
        return job.future

    def _batchable(self, job: _Job) -> bool:
        return job.on_text is None and self.config.generator.temperature == 0

    def _estimate(self, batchable: bool) -> Estimate:
        """When a question queued now can expect its answer (call under ``self._cond``)."""
        queue = [self._batchable(j) for j in self._jobs if not j.future.cancelled()]
        ahead, _ = batches_ahead(queue, batchable, self.cfg.batch_size)
        running_s, slow = 0.0, 1.0
        if self._running is not None:
            size, started = self._running
            expected, ran = self.clock.estimate(size), time.perf_counter() - started
            running_s = max(0.0, expected - ran)
            # Running past its estimate: the CPU is slower now than measured; so are the batches behind it.
            slow = max(1.0, ran / expected) if expected > 0 else 1.0
        # Its own batch may still grow, up to batch_size, with questions that arrive after it.
        own = self.clock.estimate(self.cfg.batch_size if batchable else 1) * slow
        return Estimate(running_s, slow * sum(self.clock.estimate(n) for n in ahead), own, self.clock.finish_s,
                        len(ahead) + (self._running is not None))

    def estimate(self) -> Estimate:
        """When a non-streamed question queued now can expect its answer."""
        with self._cond:
            return self._estimate(self.config.generator.temperature == 0)

    def admission(self) -> dict[str, Any]:
        """Admission control's view, for /readyz and /metrics."""
        est = self.estimate()
        return {"enabled": self.cfg.admission, "expected_wait_s": round(est.wait_s, 1),
                "batches_ahead": est.batches_ahead, "timeout_s": self.cfg.request_timeout_s,
                "batch_seconds": self.clock.snapshot(), "finish_seconds": round(self.clock.finish_s, 3),
                "measured_batches": self.clock.measured, "prior_s": self.clock.prior_s,
                "rejected": int(self.metrics.counter("cds_rejected_total", reason="overloaded"))}

    def abandon(self, future: Future[Generation]) -> None:
        """The request behind ``future`` gave up (timeout, disconnect): drop it if waiting, else stop its
        generation at the next token (a batch stops when every request in it is abandoned)."""
        job = self._by_future.get(future)
        if not future.cancel() and job is not None:
            job.stop.set()
            self.metrics.inc("cds_generation_abandoned_total")

    def _take(self) -> list[_Job] | None:
        """The next job, with the waiting non-streamed jobs that can share its batch (greedy only)."""
        with self._cond:
            while not self._jobs and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._jobs.popleft()
            batch = [first]
            if first.on_text is None and self.config.generator.temperature == 0:
                for job in list(self._jobs):
                    if len(batch) >= self.cfg.batch_size:
                        break
                    if job.on_text is None:
                        self._jobs.remove(job)
                        batch.append(job)
            self.metrics.set_gauge("cds_generation_queue", len(self._jobs))
            self._running = (len(batch), time.perf_counter())
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            # A job whose client gave up (timeout, disconnect) is cancelled: skip its generation.
            batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not batch:
                self._idle()
                continue
            a = self.assistant
            t = time.perf_counter()
            try:
                if a is None:
                    raise NotReady("the models are not loaded")
                if len(batch) == 1:
                    outs = [a.generate(batch[0].prepared, _guarded(batch[0]))]
                else:
                    outs = a.generate_batch([j.prepared for j in batch], should_stop=_all_abandoned(batch))
            except BaseException as e:  # the worker must survive any one request's failure
                if all(j.stop.is_set() for j in batch):  # Stopped: every request gave up; it would have run longer
                    self.clock.observe_at_least(len(batch), time.perf_counter() - t)
                for j in batch:
                    j.future.set_exception(e)
                continue
            else:  # a batch cut short because all its requests left (timed out) would have taken longer
                if not all(j.stop.is_set() for j in batch):
                    self.clock.observe(len(batch), time.perf_counter() - t)
                else:
                    self.clock.observe_at_least(len(batch), time.perf_counter() - t)
            finally:
                self._idle()
                log.info("generation", extra={"event": "generation", "batch": len(batch),
                                              "ms": round((time.perf_counter() - t) * 1000, 1),
                                              "abandoned": sum(j.stop.is_set() for j in batch)})
                self.metrics.observe("cds_generation_seconds", time.perf_counter() - t)
                self.metrics.observe("cds_generation_batch_size", len(batch), buckets=(1, 2, 4, 8, 16, 32))
            for j, out in zip(batch, outs, strict=True):
                j.future.set_result(out)

    def _idle(self) -> None:
        with self._cond:
            self._running = None
