"""Admission control for the generator: refuse at once a question that would wait past the request timeout.

The server generates in one worker thread, one batch at a time. A question that reaches the generator
queue waits for the batch being generated and for every batch the worker will take before its own, then
for its own batch, then for the citation check. :class:`BatchClock` keeps the measured wall time of
recent generation batches (an exponentially weighted mean per batch size, with a prior before the first
measurement); :func:`batches_ahead` replays the worker's batching rule on the queue. Together they give
the expected time to an answer; the engine refuses (HTTP 429, ``Retry-After``) a question whose expected
answer would come after ``(1 - serve.admission_headroom) x serve.request_timeout_s`` (headroom 0 by
default), instead of letting it wait for a 504. The headroom is for batches slower than the running mean
(in the real-model load test on a shared core, a batch of three took 248 s right after a batch of four had
taken 197 s: BENCHMARKS.md).

The estimate also learns from batches that go slower than it: a batch cut short because every request in
it timed out took at least as long as it ran (:meth:`BatchClock.observe_at_least`), and while the running
batch is past its estimate, the batches queued behind it are assumed as much slower (``Engine._estimate``).
Without these, a slowdown (another process taking the CPU) made every admitted batch time out while the
estimate, never updated by a completed batch, kept admitting more.

Only questions that need the generator are counted: evidence-only questions and questions the
answerability gate refuses are answered before the queue and never refused for generator capacity.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.3  # weight of the newest batch in the running mean (about the last five batches count)


class BatchClock:
    """Measured seconds per generation batch, by batch size; and of the check after generation.

    Before any batch is measured a batch of ``n`` is assumed to take ``n * prior_s`` (one after
    another, no gain from batching: the cautious end). A size not yet measured is estimated from the
    measured ones: no slower than the next larger measured size. Every size, measured or not, is at
    most proportionally slower than the next smaller measured one (a batch is never slower than its
    questions one after another): so a batch of four measured slow while the CPU was taken (or cut short
    by timeouts) stops counting once batches of one are measured fast again; otherwise its estimate
    would refuse every question that finds anything ahead, and batches of four would never run again
    to correct it.
    """

    def __init__(self, prior_s: float):
        self.prior_s = prior_s
        self._lock = threading.Lock()
        self._batch: dict[int, float] = {}
        self._finish: float | None = None
        self.measured = 0

    def observe(self, size: int, seconds: float) -> None:
        """One generation batch of ``size`` questions took ``seconds`` (wall)."""
        with self._lock:
            old = self._batch.get(size)
            self._batch[size] = seconds if old is None else (1 - ALPHA) * old + ALPHA * seconds
            self.measured += 1

    def observe_at_least(self, size: int, seconds: float) -> None:
        """A batch of ``size`` was cut short after ``seconds`` (every request in it gave up, e.g. timed out):
        it would have taken longer. A bound above the estimate replaces it; one below says nothing."""
        if seconds > self.estimate(size):
            with self._lock:
                self._batch[size] = seconds
                self.measured += 1

    def observe_finish(self, seconds: float) -> None:
        """The citation and support check of one answer took ``seconds``."""
        with self._lock:
            self._finish = seconds if self._finish is None else (1 - ALPHA) * self._finish + ALPHA * seconds

    def estimate(self, size: int) -> float:
        """Expected seconds of a generation batch of ``size`` questions."""
        with self._lock:
            known = dict(self._batch)
        if not known:
            return self.prior_s * size
        smaller = [s for s in known if s < size]
        cap = known[max(smaller)] * size / max(smaller) if smaller else math.inf
        if size in known:
            return min(known[size], cap)
        larger = [s for s in known if s > size]
        return min(known[min(larger)], cap) if larger else cap

    @property
    def finish_s(self) -> float:
        return self._finish or 0.0

    def snapshot(self) -> dict[str, float]:
        """The measured means by batch size (seconds), for /readyz and /metrics."""
        with self._lock:
            return {str(k): round(v, 3) for k, v in sorted(self._batch.items())}


def batches_ahead(queue: Sequence[bool], new: bool, batch_size: int) -> tuple[list[int], int]:
    """The batches the worker takes before a new question, and the size of the batch it joins.

    ``queue`` says, for each waiting question in order, whether it can share a batch (non-streamed,
    greedy decoding); ``new`` the same for the newcomer, who joins the end. The worker's rule
    (``Engine._take``): take the first waiting question, and when it can share, the next waiting
    questions that can share, up to ``batch_size``. Returns the sizes of the batches before the
    newcomer's, and the size of the newcomer's batch as the queue stands (it may grow, up to
    ``batch_size``, with questions that arrive later).
    """
    items = [*queue, new]
    me = len(items) - 1
    waiting = list(range(len(items)))
    ahead: list[int] = []
    while waiting:
        first = waiting.pop(0)
        batch = [first]
        if items[first]:
            for j in list(waiting):
                if len(batch) >= batch_size:
                    break
                if items[j]:
                    waiting.remove(j)
                    batch.append(j)
        if me in batch:
            return ahead, len(batch)
        ahead.append(len(batch))
    raise AssertionError("unreachable: the newcomer is in some batch")


@dataclass(frozen=True)
class Estimate:
    """When a question entering the generator queue now can expect its answer (seconds from now)."""

    running_s: float  # what is left of the batch being generated
    queued_s: float  # the batches the worker takes before this question's
    own_s: float  # this question's batch
    finish_s: float  # the citation check after it
    batches_ahead: int  # including the one being generated

    @property
    def wait_s(self) -> float:
        """Seconds until the answer: the batches ahead, its own batch and the check."""
        return self.running_s + self.queued_s + self.own_s + self.finish_s

    def refuse(self, elapsed_s: float, timeout_s: float, headroom: float = 0.0) -> bool:
        """Whether the answer would come after the timeout less its ``headroom`` (a fraction of it). A question
        with nothing ahead of it is never refused: waiting cannot make its batch shorter."""
        return self.batches_ahead > 0 and elapsed_s + self.wait_s > timeout_s * (1.0 - headroom)

    def retry_after(self, elapsed_s: float, timeout_s: float, headroom: float = 0.0) -> int:
        """Seconds until the queue has moved on enough for this question to be answered in time."""
        return max(1, math.ceil(elapsed_s + self.wait_s - timeout_s * (1.0 - headroom)))
