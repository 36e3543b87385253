"""Readers: benchmark files -> :class:`MCQItem` lists. Pure parsing, no models.

Every reader fails with a one-line :class:`~rag.errors.InputError` naming the file and the line
(or record) that is wrong; nothing is skipped silently.

Formats:
- MedMCQA JSONL (``question, opa..opd, cop, subject_name, id``): ``cop`` is 1-based in
  ``../shared/data`` and 0-based in the Hugging Face copy. ``cop_base="auto"`` decides from the
  whole file (a 0 means 0-based, a 4 means 1-based) and refuses a file that has neither.
- MMLU headerless CSV (``question,A,B,C,D,answer``), one file per subject named
  ``{subject}_{split}.csv``; a folder reads the medical subjects in it.
- MedQA-USMLE JSONL (``question, options{A..}, answer_idx``).
- MIRAGE ``benchmark.json`` (``{dataset: {id: {question, options{A..}, answer}}}``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from eval import jsonl
from rag.errors import InputError

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
MMLU_MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                "professional_medicine")
BENCHES = ("medmcqa", "mmlu", "medqa", "mirage")
CopBase = Literal["auto", "0", "1"]


@dataclass(frozen=True)
class MCQItem:
    id: str
    question: str
    options: tuple[str, ...]
    answer: int  # 0-based index into options
    subject: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Dataset:
    """Items plus what was decided while reading them (recorded in each run's summary)."""

    bench: str
    items: list[MCQItem]
    files: list[Path]
    notes: dict[str, Any]


def _exists(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} not found: {path}")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    _exists(path, "benchmark file")
    yield from jsonl.objects(path)


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str | int | float) or isinstance(value, bool) or not str(value).strip():
        raise InputError(f"{where}: field '{key}' is missing or empty")
    return str(value).strip()


def _check_unique(items: Sequence[MCQItem], path: Path) -> None:
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise InputError(f"{path}: question id '{it.id}' occurs more than once")
        seen.add(it.id)


# -- MedMCQA -----------------------------------------------------------------------------------
def read_medmcqa(path: str | Path, cop_base: CopBase = "auto") -> Dataset:
    """MedMCQA JSONL. ``cop_base``: "1" (this project's data), "0" (Hugging Face), or "auto"."""
    p = Path(path)
    rows: list[tuple[int, dict[str, Any], int]] = []
    for n, row in _jsonl(p):
        where = f"{p}:{n}"
        cop = row.get("cop")
        if isinstance(cop, str) and cop.strip().lstrip("-").isdigit():
            cop = int(cop)
        if not isinstance(cop, int) or isinstance(cop, bool):
            raise InputError(f"{where}: field 'cop' must be an integer answer index, got {cop!r}")
        if cop == -1:
            raise InputError(f"{where}: 'cop' is -1 (unlabelled, as in the Hugging Face test split); "
                             "evaluate a labelled split")
        if not 0 <= cop <= 4:
            raise InputError(f"{where}: 'cop' is {cop}; expected 0..3 (0-based) or 1..4 (1-based)")
        rows.append((n, row, cop))
    if not rows:
        raise InputError(f"{p}: no questions in the file")
    cops = {c for _, _, c in rows}
    if cop_base == "auto":
        if 0 in cops and 4 in cops:
            raise InputError(f"{p}: 'cop' takes both 0 and 4, so it is neither 0- nor 1-based; check the file")
        if 0 in cops:
            base = 0
        elif 4 in cops:
            base = 1
        else:
            raise InputError(f"{p}: cannot tell whether 'cop' is 0- or 1-based (only values 1..3 occur); "
                             "pass --cop-base 0 (Hugging Face copy) or --cop-base 1 (../shared/data)")
        log.info("%s: 'cop' detected as %d-based", p, base)
    else:
        base = int(cop_base)
        bad = next(((n, c) for n, _, c in rows if not base <= c <= base + 3), None)
        if bad is not None:
            raise InputError(f"{p}:{bad[0]}: 'cop' is {bad[1]}, impossible with --cop-base {base}")
    items = []
    for n, row, cop in rows:
        where = f"{p}:{n}"
        options = tuple(_text(row, k, where) for k in ("opa", "opb", "opc", "opd"))
        subject = str(row.get("subject_name") or "unknown").strip() or "unknown"
        items.append(MCQItem(str(row.get("id") or f"line{n}"), _text(row, "question", where), options,
                             cop - base, subject))
    _check_unique(items, p)
    return Dataset("medmcqa", items, [p], {"cop_base": base, "cop_base_source": cop_base})


# -- MMLU --------------------------------------------------------------------------------------
def _mmlu_subject(path: Path) -> str:
    stem = path.stem
    for split in ("_dev", "_val", "_test", "_train", "_auxiliary_train"):
        if stem.endswith(split):
            return stem[: -len(split)]
    return stem


def read_mmlu_file(path: str | Path, subject: str | None = None) -> list[MCQItem]:
    """One headerless MMLU CSV: ``question,A,B,C,D,answer`` (answer is a letter)."""
    p = Path(path)
    _exists(p, "MMLU file")
    subj = subject or _mmlu_subject(p)
    items: list[MCQItem] = []
    with p.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != 6:
                raise InputError(f"{p}:{n}: expected 6 columns (question,A,B,C,D,answer), got {len(row)}")
            answer = row[5].strip().upper()
            if answer not in ("A", "B", "C", "D"):
                hint = " (is this a header line? MMLU files have none)" if answer == "ANSWER" else ""
                raise InputError(f"{p}:{n}: answer must be A, B, C or D, got {row[5]!r}{hint}")
            if not row[0].strip():
                raise InputError(f"{p}:{n}: the question is empty")
            items.append(MCQItem(f"{subj}/{len(items)}", row[0].strip(), tuple(c.strip() for c in row[1:5]),
                                 "ABCD".index(answer), subj))
    if not items:
        raise InputError(f"{p}: no questions in the file")
    return items


def mmlu_files(folder: Path, subjects: Sequence[str] | None = None) -> dict[str, Path]:
    """``{subject: csv}`` for the requested subjects (default: the six medical ones present)."""
    _exists(folder, "MMLU folder")
    found = {_mmlu_subject(f): f for f in sorted(folder.glob("*.csv"))}
    wanted = list(subjects) if subjects else [s for s in MMLU_MEDICAL if s in found]
    missing = [s for s in wanted if s not in found]
    if missing:
        raise InputError(f"{folder}: no CSV for subject(s) {', '.join(missing)}; "
                         f"present: {', '.join(sorted(found)) or 'none'}")
    if not wanted:
        raise InputError(f"{folder}: none of the MMLU medical subjects ({', '.join(MMLU_MEDICAL)}) is there; "
                         "pass --subjects")
    return {s: found[s] for s in wanted}


def read_mmlu(path: str | Path, subjects: Sequence[str] | None = None) -> Dataset:
    """A folder of ``{subject}_{split}.csv`` files, or a single CSV."""
    p = Path(path)
    _exists(p, "MMLU path")
    files = mmlu_files(p, subjects) if p.is_dir() else {_mmlu_subject(p): p}
    if not p.is_dir() and subjects and _mmlu_subject(p) not in subjects:
        raise InputError(f"{p} holds subject {_mmlu_subject(p)}, not {', '.join(subjects)}")
    items = [it for s, f in files.items() for it in read_mmlu_file(f, s)]
    return Dataset("mmlu", items, list(files.values()), {"subjects": list(files)})


# -- MedQA-USMLE -------------------------------------------------------------------------------
def _lettered(options: Any, where: str) -> tuple[str, ...]:
    if not isinstance(options, dict) or not options:
        raise InputError(f"{where}: 'options' must be an object like {{\"A\": ..., \"B\": ...}}")
    keys = sorted(options)
    if keys != list(LETTERS[: len(keys)]):
        raise InputError(f"{where}: option keys must be consecutive letters from A, got {', '.join(keys)}")
    return tuple(_text(options, k, where) for k in keys)


def _answer_index(value: Any, n_options: int, where: str, field: str) -> int:
    letter = str(value).strip().upper() if value is not None else ""
    if len(letter) != 1 or letter not in LETTERS[:n_options]:
        raise InputError(f"{where}: '{field}' must be one of {', '.join(LETTERS[:n_options])}, got {value!r}")
    return LETTERS.index(letter)


def read_medqa(path: str | Path) -> Dataset:
    p = Path(path)
    items = []
    for n, row in _jsonl(p):
        where = f"{p}:{n}"
        options = _lettered(row.get("options"), where)
        answer = _answer_index(row.get("answer_idx"), len(options), where, "answer_idx")
        subject = str(row.get("meta_info") or "medqa")
        items.append(MCQItem(str(row.get("id") or f"medqa/{n}"), _text(row, "question", where), options, answer,
                             subject))
    if not items:
        raise InputError(f"{p}: no questions in the file")
    _check_unique(items, p)
    return Dataset("medqa", items, [p], {})


# -- MIRAGE ------------------------------------------------------------------------------------
def read_mirage(path: str | Path, datasets: Sequence[str] | None = None) -> Dataset:
    """MIRAGE ``benchmark.json``; ``datasets`` selects e.g. medqa, medmcqa, mmlu, pubmedqa, bioasq."""
    p = Path(path)
    _exists(p, "MIRAGE benchmark file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected {{dataset: {{id: question}}}} at the top level")
    names = list(datasets) if datasets else list(data)
    missing = [d for d in names if d not in data]
    if missing:
        raise InputError(f"{p}: no dataset {', '.join(missing)}; present: {', '.join(data)}")
    items = []
    for ds in names:
        block = data[ds]
        if not isinstance(block, dict):
            raise InputError(f"{p}: dataset '{ds}' must map ids to questions")
        for qid, row in block.items():
            where = f"{p}: {ds}/{qid}"
            if not isinstance(row, dict):
                raise InputError(f"{where}: expected an object with question, options, answer")
            options = _lettered(row.get("options"), where)
            items.append(MCQItem(f"{ds}/{qid}", _text(row, "question", where), options,
                                 _answer_index(row.get("answer"), len(options), where, "answer"), ds))
    if not items:
        raise InputError(f"{p}: no questions in the selected datasets")
    return Dataset("mirage", items, [p], {"datasets": names})


def read_bench(bench: str, path: str | Path, subjects: Sequence[str] | None = None,
               cop_base: CopBase = "auto") -> Dataset:
    """Read any supported benchmark; ``subjects`` filters by subject (MMLU: by file, MIRAGE: by dataset)."""
    if bench == "medmcqa":
        ds = read_medmcqa(path, cop_base)
    elif bench == "mmlu":
        return read_mmlu(path, subjects)
    elif bench == "medqa":
        ds = read_medqa(path)
    elif bench == "mirage":
        return read_mirage(path, subjects)
    else:
        raise InputError(f"unknown benchmark '{bench}'; choose one of {', '.join(BENCHES)}")
    if subjects:
        wanted = {s.lower() for s in subjects}
        ds.items = [it for it in ds.items if it.subject.lower() in wanted]
        if not ds.items:
            raise InputError(f"no question in {path} has subject {', '.join(subjects)}")
        ds.notes["subjects"] = list(subjects)
    return ds


def fewshot_pool(bench: str, data_path: str | Path, fewshot: str | Path | None, subjects: Sequence[str],
                 cop_base: CopBase = "auto") -> tuple[dict[str, list[MCQItem]], list[Path]]:
    """Exemplars by subject (key "*" applies to every subject) and the files they came from.

    MMLU: ``fewshot`` is the dev folder (default: ``dev/`` beside the evaluated split folder), one
    file per subject as in lm-evaluation-harness. Other benchmarks: a file in the same format, whose
    first questions serve every subject.
    """
    if bench == "mmlu":
        data = Path(data_path)
        folder = Path(fewshot) if fewshot else (data.parent if data.is_file() else data).parent / "dev"
        if not folder.is_dir():
            raise InputError(f"k-shot MMLU needs the dev exemplars: no folder {folder}; pass --fewshot DIR")
        files = mmlu_files(folder, subjects)
        return {s: read_mmlu_file(f, s) for s, f in files.items()}, list(files.values())
    if fewshot is None:
        raise InputError(f"k-shot {bench} needs exemplars: pass --fewshot FILE (same format as the data)")
    ds = read_bench(bench, fewshot, None, cop_base)
    return {"*": ds.items}, ds.files
