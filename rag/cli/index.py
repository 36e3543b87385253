"""``app.py index build|update|status|verify|rollback``: the index jobs (:class:`rag.index_jobs.IndexJobs`).

Exit codes: 0 ok, 1 runtime failure or damaged index, 2 input error, 3 published (or up to date)
but some source files were skipped, 75 another writer holds the lock (retry later).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.cli import fraction, load_config, print_json, with_index, with_lock

if TYPE_CHECKING:
    from rag.config import AppConfig
    from rag.index_jobs import IndexJobs

KINDS = ["guideline", "ehr", "reference"]


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    ix = sub.add_parser("index", parents=[common], help="build, update and inspect the index")
    isub = ix.add_subparsers(dest="index_command", required=True)

    b = isub.add_parser("build", parents=[common], help="build a new index version from sources (full re-embed)")
    b.add_argument("sources", nargs="*", help="[FORMAT:]PATH sources: folders of .md/.txt/.html/.pdf, MedQuAD XML "
                   "tree, NGC/USPSTF .jsonl, MTSamples/UCI heart-failure .csv, WikiDoc .json")
    b.add_argument("--source-set", help="a named source list from the config (e.g. 'full' in configs/full.yaml)")
    b.add_argument("--kind", choices=KINDS, help="kind for documents without one")
    b.add_argument("--skip-bad", action="store_true", help="skip unreadable files (reported) instead of failing")
    b.add_argument("--json", action="store_true")
    with_index(b)
    with_lock(b)
    b.set_defaults(handler=build)
    u = isub.add_parser("update", parents=[common], help="bring the index up to date with the sources "
                        "(only changed documents are re-embedded; publishes only if anything changed)")
    u.add_argument("sources", nargs="*", help="the complete source set: documents no longer in it are removed")
    u.add_argument("--source-set", help="a named source list from the config (e.g. 'full' in configs/full.yaml)")
    u.add_argument("--kind", choices=KINDS, help="kind for documents without one")
    u.add_argument("--strict", action="store_true", help="abort without publishing if any file cannot be read")
    u.add_argument("--rebuild", action="store_true",
                   help="re-chunk and re-embed everything (required after changing the embedder or chunking)")
    u.add_argument("--max-removed", type=fraction, metavar="FRACTION",
                   help="refuse to remove more than this share of documents (default: index.max_removed)")
    u.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    with_index(u)
    with_lock(u)
    u.set_defaults(handler=update)
    s = isub.add_parser("status", parents=[common], help="show the current index version, counts and history")
    s.add_argument("--json", action="store_true")
    with_index(s)
    s.set_defaults(handler=status)
    v = isub.add_parser("verify", parents=[common], help="check index files against the manifest")
    v.add_argument("--json", action="store_true")
    with_index(v)
    v.set_defaults(handler=verify)
    r = isub.add_parser("rollback", parents=[common], help="make an earlier version current again")
    r.add_argument("--to", metavar="VERSION", help="version name or number (default: the current one's parent)")
    r.add_argument("--json", action="store_true")
    with_index(r)
    with_lock(r)
    r.set_defaults(handler=rollback)


def _jobs(args: argparse.Namespace) -> tuple[IndexJobs, AppConfig]:
    """The jobs on the command's index, with the embedder queries use (tests swap it for a hash embedder)."""
    from rag import Assistant
    from rag.index_jobs import IndexJobs

    cfg = load_config(args)
    return IndexJobs.of(Assistant(cfg, progress=not args.quiet and not getattr(args, "json", False))), cfg


def _sources(args: argparse.Namespace, cfg: AppConfig) -> list[str]:
    """SOURCE paths given on the command line plus those of ``--source-set NAME``."""
    from rag.config import source_set
    from rag.errors import InputError

    sources = list(args.sources) + (source_set(cfg, args.source_set) if args.source_set else [])
    if not sources:
        raise InputError(f"index {args.index_command} needs SOURCE paths or --source-set NAME (e.g. --config "
                         "configs/full.yaml --source-set full)")
    return sources


def build(args: argparse.Namespace) -> int:
    jobs, cfg = _jobs(args)
    manifest = jobs.build(_sources(args, cfg), kind=args.kind, strict=not args.skip_bad, lock_timeout=args.lock_timeout)
    if args.json:
        print_json({"version": manifest["version"], "index": str(jobs.root), "counts": manifest["counts"],
                    "seconds": {k: round(v, 2) for k, v in manifest["seconds"].items()},
                    "read": manifest.get("load_stats", {}),
                    "skipped": [{"path": p, "reason": r} for p, r in manifest["skipped"]]})
    else:
        c = manifest["counts"]
        print(f"published {manifest['version']} at {jobs.root}: {c['documents']} documents, {c['parents']} sections, "
              f"{c['children']} passages")
        secs = ", ".join(f"{k} {v:.1f}s" for k, v in manifest["seconds"].items())
        print(f"  stages: {secs}")
        for k, v in sorted(manifest.get("load_stats", {}).items()):
            print(f"  {k}: {v}")
        for p, r in manifest["skipped"]:
            print(f"  skipped {p}: {r}")
    return 3 if manifest["skipped"] else 0


def update(args: argparse.Namespace) -> int:
    jobs, cfg = _jobs(args)
    res = jobs.update(_sources(args, cfg), kind=args.kind, strict=args.strict, rebuild=args.rebuild,
                      lock_timeout=args.lock_timeout, max_removed=args.max_removed)
    if args.json:
        print(json.dumps({"index": str(jobs.root), **res.summary()}, ensure_ascii=False))
    else:
        _print_update(res, jobs.root)
    return 3 if res.skipped else 0


def rollback(args: argparse.Namespace) -> int:
    jobs, _ = _jobs(args)
    old, new = jobs.rollback(args.to, lock_timeout=args.lock_timeout)
    if args.json:
        print(json.dumps({"index": str(jobs.root), "from": old, "to": new}))
    else:
        print(f"rolled back {jobs.root}: current version is now {new} (was {old})")
    return 0


def status(args: argparse.Namespace) -> int:
    jobs, _ = _jobs(args)
    st = jobs.status()
    if args.json:
        print_json(st)
    else:
        _print_status(st)
    return 0


def verify(args: argparse.Namespace) -> int:
    jobs, _ = _jobs(args)
    problems = jobs.verify()
    if args.json:
        print_json({"ok": not problems, "problems": problems})
    else:
        print("index OK" if not problems else "index BROKEN:\n  " + "\n  ".join(problems))
    return 0 if not problems else 1


def _shown(names: list[str], n: int = 20) -> str:
    return ", ".join(names[:n]) + (" …" if len(names) > n else "")


def _print_update(res: Any, root: Path) -> None:
    d, c, e = res.documents, res.chunks, res.embeddings
    if res.published:
        print(f"published {res.version} at {root} ({res.mode}; previous {res.previous or '-'}): "
              f"+{len(d['added'])} added, ~{len(d['changed'])} changed, -{len(d['removed'])} removed documents; "
              f"{c['total']} passages ({e['computed']} embedded, {e['cached']} reused)")
    else:
        print(f"no changes: {res.previous} at {root} is up to date (nothing published)")
    for label in ("changed", "removed", "kept"):
        if d[label]:
            shown = ", ".join(d[label][:20]) + (f" … (+{len(d[label]) - 20})" if len(d[label]) > 20 else "")
            what = "kept previous version (source unreadable now)" if label == "kept" else label
            print(f"  {what}: {shown}")
    if d["added"] and res.mode == "update":
        print(f"  added: {_shown(d['added'])}")
    for p, r in res.skipped:
        print(f"  skipped {p}: {r}")
    if res.pruned:
        print(f"  pruned old versions: {', '.join(res.pruned)}")
    print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in res.seconds.items()))


def _print_status(st: dict[str, Any]) -> None:
    c = st["counts"]
    print(f"index {st['index']}\n  version {st['version']} (parent {st['parent_version']}), created {st['created']}")
    print(f"  embedder {st['embedder']['model_id']} dim {st['embedder']['dim']}")
    d = st["dense"]
    params = ", ".join(f"{k} {d[k]}" for k in ("m", "ef_construction", "ef_search") if k in d)
    where = f"table {d['table']} at {d.get('url')}" if d["store"] == "postgres" else d.get("file", "dense.faiss")
    print(f"  dense {d['store']} {d['type']}{f' ({params})' if params else ''}: {where}")
    print(f"  {c['documents']} documents {c['documents_by_kind']}, {c['parents']} sections, "
          f"{c['children']} passages {c['children_by_kind']}")
    _print_collections(st)
    for src in st["sources"]:
        print(f"  source {src['path']}: {src['documents']} documents {src['by_kind']}")
    pts = st["patients"]
    shown = ", ".join(pts[:8]) + (f", … ({len(pts)} in all)" if len(pts) > 8 else "")
    print(f"  patients: {shown or '-'}; size {st['bytes'] / 1e6:.1f} MB "
          f"(embedding cache {st['cache_bytes'] / 1e6:.1f} MB)")
    last = st.get("last_update")
    if last:
        d = last["documents"]
        print(f"  last change ({last['mode']}): +{len(d['added'])} added, ~{len(d['changed'])} changed, "
              f"-{len(d['removed'])} removed documents; {last['embeddings']['computed']} passages embedded, "
              f"{last['embeddings']['cached']} reused; {len(last['skipped'])} files skipped")
        for label in ("changed", "removed", "kept"):
            if d.get(label):
                print(f"    {label}: {_shown(d[label])}")
    print("  versions: " + ", ".join(v["version"] + (" (current)" if v["current"] else "") for v in st["versions"]))
    if st["lock"]:
        print(f"  locked by writer: {st['lock']}")


def _print_collections(st: dict[str, Any]) -> None:
    c = st["counts"]
    docs, pars, kids = (c.get(f"{x}_by_collection", {}) for x in ("documents", "parents", "children"))
    if docs:
        kinds = st.get("collection_kinds", {})
        print(f"  {'collection':22s} {'kind':10s} {'documents':>10s} {'sections':>10s} {'passages':>10s}")
        for name in docs:
            print(f"  {name or '-':22s} {kinds.get(name, ''):10s} {docs[name]:>10,} {pars.get(name, 0):>10,} "
                  f"{kids.get(name, 0):>10,}")
