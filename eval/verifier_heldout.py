"""Several verifier adapters on the same held-out pairs, side by side (the training card measures one).

    .venv/bin/python -m eval.verifier_heldout --pairs .cds/verifier/data/heldout.jsonl \
        --adapter v2=.cds/verifier/adapter-v2 --adapter v3=.cds/verifier/adapter-v3 [--json OUT.json]

Held-out pairs are built from documents and patients no version trained on (finetune/verifier_data.py),
so every adapter is measured on text it never saw; newer pair kinds (e.g. version 3's term swaps) show
what an older adapter misses. Prints per task AUROC, precision and recall of the positive label at 0.5,
and per kind the accuracy of each adapter.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from finetune.verifier import metrics
from finetune.verifier_data import read
from rag.config import load_config, resolve_path
from rag.errors import InputError
from rag.models import resolve
from rag.verifier import Verifier


def compare(pairs_path: Path, adapters: dict[str, Path], base: Path, max_length: int = 192) -> dict[str, Any]:
    if not pairs_path.is_file():
        raise InputError(f"--pairs {pairs_path}: no such file; build it with `python app.py train verifier`")
    pairs = read(pairs_path)
    out: dict[str, Any] = {"pairs": str(pairs_path), "n": len(pairs), "adapters": {}}
    for name, path in adapters.items():
        if not (path / "adapter_config.json").is_file():
            raise InputError(f"--adapter {name}={path}: not a verifier adapter folder (no adapter_config.json)")
        probs = Verifier(base, path, max_length=max_length, batch_size=32).score([(p.text_a, p.text_b)
                                                                                    for p in pairs])
        out["adapters"][name] = {"path": str(path), "metrics": metrics(pairs, probs)}
    return out


def table(res: dict[str, Any]) -> str:
    names = list(res["adapters"])
    first = res["adapters"][names[0]]["metrics"]
    lines = ["| task | " + " | ".join(f"{n} AUROC / P / R" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for task in first:
        cells = [res["adapters"][n]["metrics"][task] for n in names]
        lines.append(f"| {task} ({first[task]['n']}) | " + " | ".join(
            f"{c['auroc']} / {c['precision']} / {c['recall']}" for c in cells) + " |")
    lines += ["", "| task | kind | pairs | label | " + " | ".join(names) + " |",
              "|---|---|---|---|" + "---|" * len(names)]
    for task in first:
        for kind, k in first[task]["by_kind"].items():
            accs = [res["adapters"][n]["metrics"][task]["by_kind"][kind]["accuracy"] for n in names]
            lines.append(f"| {task} | {kind} | {k['n']} | {k['label']} | "
                         + " | ".join(f"{a:.3f}" for a in accs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, required=True)
    ap.add_argument("--adapter", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--config")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    adapters = {}
    for a in args.adapter:
        name, sep, path = a.partition("=")
        if not sep:
            raise SystemExit(f"--adapter {a}: write NAME=FOLDER, e.g. v3=.cds/verifier/adapter-v3")
        adapters[name] = Path(path)
    cfg = load_config(args.config, [])
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    res = compare(args.pairs, adapters, base)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    print(table(res))
    return 0


if __name__ == "__main__":
    from eval import one_line

    one_line.run(main)
