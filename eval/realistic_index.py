"""Build the index the realistic-question benchmark runs on (``configs/realistic.yaml``).

Corpus: every MedQuAD page of the held-out retrieval split (never seen by the generator or the
verifier in training) and the NGC guideline summaries (USPSTF left out: it restates NGC). The MedQuAD
files are copied (not linked: the readers skip symlinks leaving a folder) to ``.cds/realistic``.
Passages already embedded by another index can be reused by copying its ``cache`` folder into
the new index root first; ``update`` reads the cache, ``build`` would not.

    python -m eval.realistic_index [--config configs/realistic.yaml]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from eval.splits import load_split

SPLIT = Path("eval/splits/medquad_retrieval.json")


def materialise(data_dir: Path, out: Path, split_path: Path = SPLIT, ngc: bool = True) -> list[str]:
    """Copy the split's MedQuAD files to ``out``; return the index's source list (without NGC: ``ngc`` False)."""
    split = load_split(split_path)
    files = sorted(set(split["files"]["test"]) | set(split["files"]["dev"]))
    if out.exists():
        shutil.rmtree(out)
    for rel in files:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / "medquad" / rel, dst)
    # USPSTF is left out: its recommendations restate NGC summaries, so a question's gold would be ambiguous.
    ngc_src = [f"ngc:{data_dir / 'guidelines' / 'ngc_usgov_guideline_summaries.jsonl'}"] if ngc else []
    return [f"medquad:{out}", *ngc_src]


def main(argv: list[str] | None = None) -> int:
    from rag import Assistant
    from rag.config import data_dir, load_config, resolve_path
    from rag.index_jobs import IndexJobs

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", default="configs/realistic.yaml")
    ap.add_argument("--no-ngc", action="store_true",
                    help="MedQuAD pages only (configs/realistic-medquad*.yaml: the encoder comparison, issue 15)")
    ap.add_argument("--reuse-cache", default=None,
                    help="an index folder whose embedding cache is copied in first (same embedder: no re-embedding)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    sources = materialise(data_dir(cfg), resolve_path(".cds/realistic/medquad"), ngc=not args.no_ngc)
    if args.reuse_cache:
        src, dst = resolve_path(args.reuse_cache) / "cache", resolve_path(cfg.index.dir) / "cache"
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)
    res = IndexJobs.of(Assistant(cfg, progress=True)).update(sources, strict=True)
    print(f"index {resolve_path(cfg.index.dir)}: {res.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
