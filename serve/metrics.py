"""Counters, gauges and histograms in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import math
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0, 40.0, 80.0, 160.0)

HELP = {
    "cds_requests_total": ("counter", "HTTP requests by route and status code"),
    "cds_answers_total": ("counter", "questions answered, by outcome (answered, abstained, evidence)"),
    "cds_rejected_total": ("counter", "questions refused before answering, by reason"),
    "cds_request_seconds": ("histogram", "time to the final answer of POST /v1/query"),
    "cds_first_token_seconds": ("histogram", "time to the first streamed draft token"),
    "cds_generation_seconds": ("histogram", "time of one generation call (a batch counts once)"),
    "cds_generation_batch_size": ("histogram", "questions generated together"),
    "cds_questions_in_progress": ("gauge", "questions admitted and not yet answered"),
    "cds_generation_queue": ("gauge", "prepared questions waiting for the generator"),
    "cds_admission_expected_wait_seconds": ("gauge", "expected seconds to an answer for a question entering the "
                                                     "generator queue now (admission control)"),
    "cds_generation_batch_seconds_mean": ("gauge", "running mean of measured generation batch seconds, by size"),
    "cds_load_seconds": ("gauge", "seconds the models and the index took to load"),
    "cds_ready": ("gauge", "1 when the models and the index are loaded"),
    "cds_process_resident_bytes": ("gauge", "resident memory of the server process"),
    "cds_index_info": ("gauge", "the index version being served (label), always 1"),
}

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                    for k, v in labels)
    return "{" + body + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._hist: dict[str, dict[Labels, tuple[tuple[float, ...], list[int], list[float]]]] = defaultdict(dict)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._counters[name][key] = self._counters[name].get(key, 0.0) + value

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._gauges[name][tuple(sorted(labels.items()))] = float(value)

    def observe(self, name: str, value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            b, counts, total = self._hist[name].setdefault(key, (buckets, [0] * (len(buckets) + 1), [0.0]))
            counts[next((i for i, edge in enumerate(b) if value <= edge), len(b))] += 1
            total[0] += value

    def counter(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            names = sorted({*self._counters, *self._gauges, *self._hist})
            for name in names:
                kind, text = HELP.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, v in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {v:g}")
                for key, v in sorted(self._gauges.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {v:g}")
                for key, (edges, counts, total) in sorted(self._hist.get(name, {}).items()):
                    cum = 0
                    for edge, c in zip((*edges, math.inf), counts, strict=True):
                        cum += c
                        le = "+Inf" if edge == math.inf else f"{edge:g}"
                        lines.append(f"{name}_bucket{_labels((*key, ('le', le)))} {cum}")
                    lines.append(f"{name}_sum{_labels(key)} {total[0]:g}")
                    lines.append(f"{name}_count{_labels(key)} {cum}")
        return "\n".join(lines) + "\n"


def resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")
