"""Serving benchmark: a cold `app.py query` process against the warm server, and N concurrent clients.

    .venv/bin/python -m eval.bench_serve [--index DIR] [--cold 1] [--warm 3] [--clients 4] [--per-client 2]
                                         [--config FILE] [--set KEY=VALUE ...] [--output FILE.json]

Measures, in one run on this machine (the index must exist; the demo index builds on first `app.py query`):
- cold: wall time of a fresh `app.py query --json` process per question (model loading included);
- the server's start: seconds until /readyz answers 200 (models and index loaded once);
- warm, one client: POST /v1/query with streaming: time to the first draft token and to the checked
  answer, per question;
- load: ``--clients`` threads each asking ``--per-client`` questions at once (non-streamed, so the
  server may batch them): failed requests, p50/p95 latency, answers per minute, the server's RSS.
Questions: those of eval/bench_query.py (HFrEF drug classes, P002's latest LVEF, the blood-pressure target,
ICD indication, one out-of-corpus question), in order, repeated as needed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def questions(n: int) -> list[tuple[str, str | None]]:
    """The demo questions of eval/bench_query.py (four answered, one out of corpus), repeated to ``n``."""
    from eval.bench_query import QUESTIONS

    return [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def _common(args: argparse.Namespace) -> list[str]:
    out = ["--config", args.config] if args.config else []
    for s in args.set or []:
        out += ["--set", s]
    return out


def _row(q: str, pid: str | None, ans: dict[str, Any]) -> dict[str, Any]:
    t = ans.get("timings_ms", {})
    return {"question": q, "patient": pid, "abstained": ans.get("abstained"), "generated": "first_token" in t,
            "server_total_s": round(t.get("total", 0) / 1000, 2)}


def cold(args: argparse.Namespace, qs: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    rows = []
    for q, pid in qs:
        cmd = [sys.executable, str(ROOT / "app.py"), *_common(args), "query", q, "--json", "-q"]
        if pid:
            cmd += ["--patient", pid]
        if args.index:
            cmd += ["--index", args.index]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        ok = proc.returncode == 0
        ans = json.loads(proc.stdout) if ok else {}
        rows.append({**_row(q, pid, ans), "ok": ok, "wall_s": round(wall, 2)})
    return rows


def _post(base: str, body: dict[str, Any], timeout: float = 900) -> tuple[int, dict[str, Any], float]:
    req = urllib.request.Request(base + "/v1/query", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - t
    except urllib.error.HTTPError as e:
        return e.code, {"error": e.read().decode(errors="replace")}, time.perf_counter() - t


def streamed(host: str, port: int, q: str, pid: str | None) -> dict[str, Any]:
    """First draft token and the checked answer, read off the event stream."""
    conn = http.client.HTTPConnection(host, port, timeout=900)
    t = time.perf_counter()
    conn.request("POST", "/v1/query", json.dumps({"question": q, "patient_id": pid, "stream": True}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = None
    final: dict[str, Any] = {}
    event = ""
    for raw in resp:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            if event == "draft" and first is None:
                first = time.perf_counter() - t
            elif event in ("answer", "error"):
                final = json.loads(line[6:])
                break
    total = time.perf_counter() - t
    conn.close()
    return {**_row(q, pid, final), "ok": "abstained" in final,
            "first_token_s": round(first, 2) if first is not None else None, "answer_s": round(total, 2)}


def load(base: str, qs: list[tuple[str, str | None]], clients: int, per_client: int) -> dict[str, Any]:
    lat: list[float] = []
    fails: list[int] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for j in range(per_client):
            q, pid = qs[(i * per_client + j) % len(qs)]
            status, _, s = _post(base, {"question": q, "patient_id": pid})
            with lock:
                (lat if status == 200 else fails).append(s if status == 200 else status)  # type: ignore[arg-type]

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    lat.sort()
    return {"clients": clients, "per_client": per_client, "requests": clients * per_client, "failed": len(fails),
            "failed_status": fails, "wall_s": round(wall, 1),
            "p50_s": round(statistics.median(lat), 2) if lat else None,
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None,
            "answers_per_min": round(60 * len(lat) / wall, 2)}


def _metric(base: str, name: str) -> float | None:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", help="index folder (default: index.dir of the config)")
    p.add_argument("--config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--cold", type=int, default=1, help="questions asked through a fresh process each")
    p.add_argument("--warm", type=int, default=3, help="questions asked one at a time to the warm server, streamed")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--per-client", type=int, default=2)
    p.add_argument("--output", help="write the summary JSON here")
    args = p.parse_args(argv)

    qs = questions(max(args.cold, args.warm, args.clients * args.per_client))
    summary: dict[str, Any] = {"machine": {"cpus": len(os.sched_getaffinity(0)), "python": platform.python_version()},
                               "command": "python -m eval.bench_serve " + " ".join(argv if argv is not None
                                                                                    else sys.argv[1:])}
    summary["cold"] = cold(args, qs[: args.cold])
    print(json.dumps({"cold": summary["cold"]}), flush=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "app.py"), *_common(args), "serve", "--port", str(port)]
    if args.index:
        cmd += ["--index", args.index]
    t = time.perf_counter()
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        summary["server_ready_s"] = round(time.perf_counter() - t, 1)
        summary["warm"] = [streamed("127.0.0.1", port, q, pid) for q, pid in qs[: args.warm]]
        print(json.dumps({"ready_s": summary["server_ready_s"], "warm": summary["warm"]}), flush=True)
        summary["load"] = load(base, qs, args.clients, args.per_client)
        summary["server_rss_mb"] = round((_metric(base, "cds_process_resident_bytes") or 0) / 2**20)
        batches = _metric(base, "cds_generation_batch_size_count")
        summary["generation_calls"] = batches
    finally:
        server.terminate()
        server.wait(30)
    warm_first = [r["first_token_s"] for r in summary["warm"] if r["first_token_s"] is not None]
    summary["medians"] = {
        "cold_wall_s": statistics.median([r["wall_s"] for r in summary["cold"]]) if summary["cold"] else None,
        "warm_answer_s": statistics.median([r["answer_s"] for r in summary["warm"]]) if summary["warm"] else None,
        "warm_first_token_s": statistics.median(warm_first) if warm_first else None,
    }
    print(json.dumps(summary, indent=1))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
