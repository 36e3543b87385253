"""Index job benchmark: full build vs incremental update of one changed document, and kill -9 trials.

    .venv/bin/python -m eval.bench_update --sources corpora/demo/guidelines corpora/demo/ehr \
        [--config configs/default.yaml] [--change hfref-gdmt.md] [--repeats 3] [--trials 100] [--json]

Works on a copy of the sources in a temporary folder (the originals are never edited) and a
fresh index there. Every job runs as the real CLI in a fresh process (`app.py index build` /
`app.py index update --json`), as a cron job would, with the configured embedder; reported:

- full build: the job's own stage seconds (read, chunk, embed, index, write, publish) and the
  process wall time (adds interpreter start and model load);
- update after editing one document (one sentence appended to its last section), repeated
  ``--repeats`` times on different documents: the same two figures; the ratio update / build;
- the same update in a warm process (``IndexJobs.update`` in a long-running service: imports,
  model and chunker already loaded), i.e. the marginal cost of one changed document;
- time to publish: the update's write + publish stages (temporary dir, checksums, fsync, renames);
- kill -9 trials (``eval/crash_trials.py``): the CLI update killed at random points; after each
  the current version must load, verify and answer (failures must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], config: str | None) -> tuple[dict[str, Any], float]:
    cmd = [sys.executable, str(ROOT / "app.py"), *args, "-q"]
    if config:
        cmd += ["--config", config]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout), wall


def _edit(path: Path, n: int) -> None:
    path.write_text(path.read_text(encoding="utf-8").rstrip("\n") + f"\n\nBenchmark revision {n}: this "
                    "recommendation was reviewed and is unchanged.\n", encoding="utf-8")


def bench(sources: list[Path], config: str | None, change: list[str], repeats: int, trials: int,
          work: Path) -> dict[str, Any]:
    src_root = work / "src"
    copies = []
    for i, s in enumerate(sources):
        dst = src_root / f"{i}-{s.name}"
        if s.is_dir():
            shutil.copytree(s, dst)
        else:
            dst.mkdir(parents=True)
            shutil.copy(s, dst)
        copies.append(dst)
    idx = work / "idx"
    srcs = [str(c) for c in copies]
    out: dict[str, Any] = {"sources": [str(s) for s in sources], "config": config or "configs/default.yaml",
                           "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                           "python": platform.python_version(), "loadavg_start": os.getloadavg()}

    built, wall = _cli(["index", "build", *srcs, "--index", str(idx), "--json"], config)
    job = sum(built["seconds"].values())
    out["full_build"] = {"documents": built["counts"]["documents"], "passages": built["counts"]["children"],
                         "job_s": round(job, 3), "wall_s": round(wall, 2), "stages_s": built["seconds"]}
    print(f"full build: {built['counts']['documents']} documents, {built['counts']['children']} passages; "
          f"job {job:.2f} s, process {wall:.2f} s", flush=True)

    candidates = [p for c in copies for p in sorted(c.rglob("*")) if p.is_file() and p.suffix in (".md", ".txt")
                  and p.name != "README.md"]
    targets = [next(p for p in candidates if p.name == n) for n in change] if change else []
    others = [p for p in candidates if "ehr" not in p.parts[-3:] and p not in targets]
    targets += others[: max(0, repeats - len(targets))]
    runs = []
    for n, path in enumerate(targets[:repeats]):
        _edit(path, n)
        res, wall = _cli(["index", "update", *srcs, "--index", str(idx), "--json"], config)
        assert res["documents"]["changed"] == 1 and res["published"], res
        job = sum(res["seconds"].values())
        runs.append({"document": path.name, "job_s": round(job, 3), "wall_s": round(wall, 2),
                     "publish_s": round(res["seconds"].get("write", 0) + res["seconds"]["publish"], 4),
                     "embedded": res["embeddings"]["computed"], "reused": res["embeddings"]["cached"],
                     "stages_s": res["seconds"]})
        print(f"update ({path.name} changed): job {job:.2f} s, process {wall:.2f} s, "
              f"{res['embeddings']['computed']} passages embedded, {res['embeddings']['cached']} reused", flush=True)
    _, wall_noop = _cli(["index", "update", *srcs, "--index", str(idx), "--json"], config)
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    out["update_one_document"] = {"runs": runs, "job_s_median": med("job_s"), "wall_s_median": med("wall_s"),
                                  "publish_s_median": med("publish_s"),
                                  "job_ratio": round(med("job_s") / out["full_build"]["job_s"], 4),
                                  "wall_ratio": round(med("wall_s") / out["full_build"]["wall_s"], 4),
                                  "no_change_wall_s": round(wall_noop, 2)}
    print(f"update / full build: job {out['update_one_document']['job_ratio']:.1%}, process "
          f"{out['update_one_document']['wall_ratio']:.1%}; publish {med('publish_s') * 1000:.0f} ms", flush=True)

    out["update_warm_process"] = warm_update(srcs, idx, config, targets[0] if targets else candidates[0])
    print(f"update in a warm process (library): {out['update_warm_process']['job_s']:.3f} s "
          f"({out['update_warm_process']['job_s'] / out['full_build']['job_s']:.2%} of the full build)", flush=True)

    out["loadavg_after_timings"] = os.getloadavg()  # a shared machine: other jobs slow every stage
    if trials:
        out["kill9"] = kill_trials(srcs, idx, copies, config, trials, work)
    return out


def warm_update(srcs: list[str], idx: Path, config: str | None, path: Path) -> dict[str, Any]:
    """A long-running process (``IndexJobs.update``) whose models and imports are already loaded."""
    from rag.config import load_config
    from rag.index_jobs import IndexJobs

    a = IndexJobs(load_config(config, [f"index.dir={idx}", "index.auto_build_demo=false"]))
    a.embedder.encode_passages(["warm up"])
    _edit(path, 98)
    a.update(srcs)  # warms the chunker (NLTK sentence model) and the first forward pass
    _edit(path, 99)
    t = time.perf_counter()
    res = a.update(srcs)
    total = time.perf_counter() - t
    assert res.published and len(res.documents["changed"]) == 1
    return {"document": path.name, "job_s": round(total, 4), "stages_s": {k: round(v, 4) for k, v in
                                                                          res.seconds.items()},
            "embedded": res.embeddings["computed"]}


def kill_trials(srcs: list[str], idx: Path, copies: list[Path], config: str | None, trials: int,
                work: Path) -> dict[str, Any]:
    from eval.crash_trials import MARKERS, run_trials, summarize
    from rag.assistant import Assistant
    from rag.config import load_config
    from rag.errors import CDSError
    from rag.index import verify_index

    overrides = [f"index.dir={idx}", "index.auto_build_demo=false"]
    embedder = Assistant(load_config(config, overrides)).embedder  # loaded once for every check

    def check(root: Path) -> list[str]:
        try:
            problems = verify_index(root)
            a = Assistant(load_config(config, overrides), embedder=embedder)
            ans = a.ask("What reduces mortality in heart failure with reduced ejection fraction?", generate=False)
            if not ans.citations:
                problems.append("no citations")
            return problems
        except (CDSError, AssertionError) as e:
            return [f"{type(e).__name__}: {e}"]

    cfg_args = ["--config", config] if config else []
    cmd = [sys.executable, str(ROOT / "app.py"), "index", "update", *srcs, "--index", str(idx), *cfg_args, "-v"]
    guideline = next(c for c in copies if any(c.rglob("*.md")))
    log_path = work / "kill9.jsonl"
    t = time.perf_counter()
    with log_path.open("w") as logf:

        def log(line: str) -> None:
            logf.write(line + "\n")
            logf.flush()

        res = run_trials(cmd, idx, [Path(s) for s in srcs], guideline, trials, check, seed=1, max_delay=0.3,
                         cwd=ROOT, log=log, markers=("start", *MARKERS[1:]))
    s = summarize(res)
    s["seconds"] = round(time.perf_counter() - t, 1)
    final = subprocess.run([*cmd[:-1], "-q"], capture_output=True, text=True, cwd=ROOT)
    leftovers = [str(p) for p in [*idx.glob("versions/.tmp-*"), *idx.glob("versions/.trash-*"),
                                  *idx.glob("cache/embeddings/*/.tmp-*")]]
    s["final_run_rc"] = final.returncode
    s["leftovers_after_final_run"] = leftovers
    s["final_check"] = check(idx)
    print(f"kill -9: {s['trials']} trials, {s['failures']} failures, killed in {s['killed_in_stage']}, "
          f"outcomes {s['outcome']}", flush=True)
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", nargs="+", required=True, help="any source set (files or folders)")
    ap.add_argument("--config", help="preset YAML (default: configs/default.yaml)")
    ap.add_argument("--change", nargs="*", default=[], help="file names of documents to edit (default: guidelines)")
    ap.add_argument("--repeats", type=int, default=3, help="updates of one changed document")
    ap.add_argument("--trials", type=int, default=100, help="kill -9 trials (0 to skip)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    try:
        out = bench([Path(s).resolve() for s in args.sources], args.config, args.change, args.repeats, args.trials,
                    work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work}")
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
