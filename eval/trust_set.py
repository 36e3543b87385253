"""The trust evaluation's fixed question set: dev and test parts, written once to a file (ids only).

Every threshold, rule and weight of the trust layer is chosen on ``dev``; ``test`` is reported.
Suites, each split into dev/test:

- ``medquad``: held-out MedQuAD questions (the retrieval split's dev part -> dev, test -> test;
  never trained on by the generator or the verifier) whose page is in the trust index. Right =
  answered, with a supported sentence citing the gold page (or a verbatim duplicate).
- ``topic_removed``: MedQuAD questions whose whole topic is out of the trust index: every page of
  that focus is left out, and no indexed passage mentions the focus name (checked). Right = abstain.
- ``patient``: questions about one heart-failure patient's record (asked with ``--patient``), in the
  templates of finetune/ehr_grounded.py, for patients the generator never trained on. ``dev`` holds the
  test patients whose questions the record-line rules of rag/cite.py were written from (the first
  72 questions of test.jsonl); ``test`` holds the others and the validation patients. Right = the
  record's value stated (strict scorer, eval/patient_records.py) and the record cited; for questions
  the record cannot answer, abstain.
- ``non_medical``, ``demo_answerable``, ``demo_out_of_corpus``: questions we wrote
  (eval/questions/), split by a hash of their id. The demo suites run on the demo index (the default
  preset), the others on the trust index.

The trust index holds the MedQuAD pages of the held-out split files (minus removed topics), the demo
guidelines and notes, and the 299 heart-failure records. Its MedQuAD files are copied into
``.cds/trust/medquad`` (never into the repository).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corpora import load_sources
from corpora.heart_failure import read_records
from corpora.report import LoadReport
from eval.splits import DEFAULT_SPLIT, load_split, read_split_file, write_split
from finetune.data import assign_splits
from finetune.ehr_grounded import FACTS, UNANSWERABLE
from rag.config import PROJECT_ROOT
from rag.errors import InputError

TRUST_SPLIT = PROJECT_ROOT / "eval" / "splits" / "trust.json"
QUESTIONS = PROJECT_ROOT / "eval" / "questions"
DEMO_SOURCES = [PROJECT_ROOT / "corpora" / "demo" / "guidelines", PROJECT_ROOT / "corpora" / "demo" / "ehr"]
HF_CSV = Path("heart_failure") / "heart_failure_clinical_records_dataset.csv"


def _part_of(key: str) -> str:
    return "dev" if int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % 2 == 0 else "test"


def _rules_source_patients(test_patients: list[str], seed: int, first: int = 72) -> set[str]:
    """Test patients whose record questions were among the first ``first`` of test.jsonl.

    Replays finetune/ehr_grounded.py's seeded choice (2 questions per patient, a third with
    probability 0.4), in record order. Exact unless a record line went unretrieved (counted there).
    """
    out: set[str] = set()
    total = 0
    for pid in test_patients:
        if total >= first:
            break
        rng = random.Random(f"{seed}-ehr-{pid}")
        for _ in rng.sample(FACTS, 2):
            rng.choice([0, 1, 2])
            rng.random()
        total += 2 + (1 if rng.random() < 0.4 else 0)
        out.add(pid)
    return out


def _patient_pools(data_dir: Path, patients_per_part: int = 30) -> tuple[list[str], list[str]]:
    """Dev's patients and the pool test's are drawn from: the generator's test and validation patients
    (finetune/data.py, seed 13), never trained on; dev holds those the record-line rules were written from."""
    records = read_records(data_dir / HF_CSV, LoadReport(fmt="uci-heart-failure"))
    pids = [r.patient_id for r in records]
    split_of = assign_splits((f"patient:{p}" for p in pids), 13, [("test", 0.2), ("val", 0.1)])
    test_p = [p for p in pids if split_of[f"patient:{p}"] == "test"]
    val_p = [p for p in pids if split_of[f"patient:{p}"] == "val"]
    rules_src = _rules_source_patients(test_p, 13)
    return [p for p in test_p if p in rules_src][:patients_per_part], [p for p in test_p if p not in rules_src] + val_p


def _patient_questions(patients: list[str], seed: int) -> list[dict[str, Any]]:
    """One record question per patient (seeded fact and wording), and for half of them an unanswerable one."""
    qs: list[dict[str, Any]] = []
    for p in patients:
        prng = random.Random(f"trust-{seed}-{p}")
        fact = prng.choice(FACTS)
        qs.append({"patient_id": p, "fact": fact.key, "template": prng.randrange(len(fact.questions)),
                   "who": prng.choice(["this patient", "id"])})
        if prng.random() < 0.5:
            qs.append({"patient_id": p, "fact": None, "template": prng.randrange(len(UNANSWERABLE)),
                       "who": prng.choice(["this patient", "id"])})
    return qs


def make(data_dir: Path, seed: int = 13, medquad_per_part: int = 60, removed_per_part: int = 80,
         patients_per_part: int = 30) -> dict[str, Any]:
    split = load_split(DEFAULT_SPLIT)
    docs = load_sources([f"medquad:{data_dir / 'medquad'}"]).documents
    by_file: dict[str, list[Any]] = defaultdict(list)
    for d in docs:
        by_file[d.source.rsplit("#", 1)[0]].append(d)
    focus_of = {f: str(ds[0].meta.get("focus", "")).strip() for f, ds in by_file.items()}
    files_by_focus: dict[str, set[str]] = defaultdict(set)
    for f, focus in focus_of.items():
        files_by_focus[focus.lower()].add(f)
    rng = random.Random(seed)
    part_files = {p: sorted(split["files"][p]) for p in ("dev", "test")}
    # Removed topics: distinctive names (a word-boundary match must mean the topic). A quarter more
    # are taken out of the index than asked, because the mention check below drops some.
    removed: dict[str, list[str]] = {}
    for part, files in part_files.items():
        cands = [f for f in files if len(focus_of[f]) >= 6 and not re.search(r"[()\[\]?]", focus_of[f])]
        rng.shuffle(cands)
        removed[part] = cands[: removed_per_part * 5 // 4]
    removed_focus = {focus_of[f].lower() for fs in removed.values() for f in fs}
    index_files = sorted({f for fs in part_files.values() for f in fs
                          if focus_of[f].lower() not in removed_focus})
    demo_text = " ".join(p.read_text(encoding="utf-8").lower() for root in DEMO_SOURCES for p in root.rglob("*.md"))
    index_text = " ".join(d.text.lower() + " " + d.title.lower() for f in index_files for d in by_file[f])
    index_text += " " + demo_text
    topic: dict[str, list[str]] = {}
    for part, files in removed.items():
        # Out of corpus only if no indexed passage names it.
        keep = [f for f in files if not re.search(rf"(?<![a-z0-9]){re.escape(focus_of[f].lower())}(?![a-z0-9])",
                                                  index_text)]
        topic[part] = [rng.choice(by_file[f]).doc_id for f in keep[:removed_per_part]]
    index_set = set(index_files)
    medquad: dict[str, list[str]] = {}
    for part, files in part_files.items():
        pool = [f for f in files if f in index_set]
        rng.shuffle(pool)
        medquad[part] = [rng.choice([d for d in by_file[f] if d.meta.get("question")]).doc_id
                         for f in pool[:medquad_per_part]]
    dev_patients, test_pool = _patient_pools(data_dir, patients_per_part)
    test_patients = sorted(rng.sample(test_pool, min(patients_per_part, len(test_pool))))
    patient_q = {part: _patient_questions(ps, seed) for part, ps in (("dev", dev_patients), ("test", test_patients))}
    written: dict[str, dict[str, list[str]]] = {}
    for name in ("non_medical", "demo_answerable", "demo_out_of_corpus"):
        rows = _read_jsonl(QUESTIONS / f"{name}.jsonl")
        written[name] = {p: sorted(r["id"] for r in rows if _part_of(r["id"]) == p) for p in ("dev", "test")}
    parts: dict[str, dict[str, list[Any]]] = {p: {"medquad": medquad[p], "topic_removed": topic[p],
                                                  "patient": patient_q[p],
                 **{name: ids[p] for name, ids in written.items()}} for p in ("dev", "test")}
    return {
        "description": "Trust evaluation (eval/trust_set.py): dev chooses every threshold, rule and weight; test "
                       "is reported. Ids only.",
        "seed": seed, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "index_medquad_files": index_files,
        "counts": {p: {k: len(v) for k, v in ps.items()} for p, ps in parts.items()},
        **parts,
    }


SUITES = ("medquad", "topic_removed", "patient", "non_medical", "demo_answerable", "demo_out_of_corpus")


def _unasked_pages(split: dict[str, Any], data_dir: Path, parts: tuple[str, ...], salt: str, n: int) -> list[str]:
    """``n`` MedQuAD doc ids with a question, one per indexed page whose focus no question of ``parts`` asks about
    (answerable or removed), in an order seeded by ``salt``."""
    docs = load_sources([f"medquad:{data_dir / 'medquad'}"]).documents
    by_file: dict[str, list[Any]] = defaultdict(list)
    for d in docs:
        by_file[d.source.rsplit("#", 1)[0].split("medquad/", 1)[-1]].append(d)
    by_id = {d.doc_id: d for d in docs}
    asked = {by_id[i].meta.get("focus", "").strip().lower() for part in parts
             for suite in ("medquad", "topic_removed") for i in split[part][suite] if i in by_id}
    pool = [f for f in split["index_medquad_files"]
            if by_file.get(f) and str(by_file[f][0].meta.get("focus", "")).strip().lower() not in asked]
    rng = random.Random(salt)
    rng.shuffle(pool)
    chosen: list[str] = []
    for f in pool:
        with_q = [d for d in by_file[f] if d.meta.get("question")]
        if with_q:
            chosen.append(rng.choice(with_q).doc_id)
        if len(chosen) == n:
            break
    return chosen


def add_ece_part(split: dict[str, Any], data_dir: Path, n: int = 500, seed: int = 13) -> dict[str, Any]:
    """``split`` with an ``ece`` part: ``n`` more answerable MedQuAD questions, one per indexed page whose focus
    no dev or test question asks about (answerable or removed).

    ECE with 10 bins is noisy at the test split's ~110 answers (a perfectly calibrated confidence scores
    0.075 there by chance: BENCHMARKS.md, "Trust", eleventh session); this part is asked like test, never
    fitted on, and pooled with test's answers for ECE and Brier. The other parts are left as they are."""
    chosen = _unasked_pages(split, data_dir, ("dev", "test"), f"trust-ece-{seed}", n)
    out = dict(split)
    out["ece"] = {suite: (chosen if suite == "medquad" else []) for suite in SUITES}
    out["counts"] = {**split["counts"], "ece": {suite: len(v) for suite, v in out["ece"].items()}}
    return out


def add_page_questions(split: dict[str, Any], data_dir: Path, part: str = "dev", per_page: int = 5,
                       seed: int = 13, again: bool = False) -> dict[str, Any]:
    """``split`` with more answerable MedQuAD questions in its ``part`` (dev, test or ece): the other questions (what
    is it, its signs, causes, treatment ...) of the pages that part's MedQuAD questions come from, at most ``per_page``
    a page (seeded), appended so that an earlier run's records (or kept outcomes) still apply to the first ones.

    dev (twenty-first session): the answer calibration is a logistic fit on dev's answered questions (~110 with the
    first split); more dev answers is the honest way to a steadier fit. test (twenty-second session): ~110 answers
    cannot show ECE <= 0.05 (a perfect confidence shows ~0.09 there), and a report set no calibration has seen is
    what a candidate is judged on. ece (twenty-third session): test's pages are used up (~3 other questions a page),
    while the ece part's 488 pages hold ~1000 more; the added questions fall into the two halves by id like the
    others (:func:`ece_half`), so a report-half run asks only the new report-half ones. Every indexed page's focus is
    already asked by some part, so new pages would move one part's topics into another: the part's own pages are the
    only source. Once a part: a second call refuses rather than grow it again by accident, unless ``again`` (a
    later round: twenty-fourth session, a report set for a calibration fitted on every earlier ece answer); rounds are
    appended in order and :func:`added_round` gives one round's questions."""
    if part not in ("dev", "test", "ece"):
        raise InputError(f"only dev, test and ece grow by their own pages' questions, not {part!r}")
    if part not in split:
        raise InputError(f"the split has no {part} part; `eval trust split --ece N` adds one")
    key = f"{part}_medquad_added"
    if key in split and not again:
        raise InputError(f"the {part} part already has {split[key]} added MedQuAD questions; add a later round of "
                         "its pages' remaining questions with --again")
    rounds = rounds_of(split, part)
    docs = load_sources([f"medquad:{data_dir / 'medquad'}"]).documents
    by_file: dict[str, list[Any]] = defaultdict(list)
    for d in docs:
        by_file[d.source.rsplit("#", 1)[0]].append(d)
    by_id = {d.doc_id: d for d in docs}
    first = split[part]["medquad"][:len(split[part]["medquad"]) - len(added(split, part))]
    asked = {i for p in ("dev", "test", "ece") if p in split for suite in ("medquad", "topic_removed")
             for i in split[p][suite]}
    # the first round's seed string is kept as it was, so that round is drawn as before
    rng = random.Random(f"trust-{part}-medquad-{seed}" + (f"-round{len(rounds) + 1}" if rounds else ""))
    chosen: list[str] = []
    for doc_id in first:
        others = [d.doc_id for d in by_file[by_id[doc_id].source.rsplit("#", 1)[0]]
                  if d.meta.get("question") and d.doc_id not in asked]
        chosen += rng.sample(others, min(per_page, len(others)))
        asked.update(others)
    if not chosen:
        raise InputError(f"{part}'s MedQuAD pages have no other questions to add")
    out = dict(split)
    out[part] = {**split[part], "medquad": [*split[part]["medquad"], *chosen]}
    out[key] = sum(rounds) + len(chosen)
    if rounds:
        out[f"{part}_medquad_rounds"] = [*rounds, len(chosen)]
    out["counts"] = {**split["counts"], part: {suite: len(v) for suite, v in out[part].items()}}
    return out


def added(split: dict[str, Any], part: str = "dev") -> list[str]:
    """The MedQuAD questions :func:`add_page_questions` appended to ``part`` (none before it ran)."""
    n = int(split.get(f"{part}_medquad_added", 0))
    return split[part]["medquad"][-n:] if n else []


def rounds_of(split: dict[str, Any], part: str) -> list[int]:
    """How many questions each round of :func:`add_page_questions` appended to ``part``, in order ([] before any)."""
    n = int(split.get(f"{part}_medquad_added", 0))
    rounds = [int(r) for r in split.get(f"{part}_medquad_rounds", [n] if n else [])]
    if sum(rounds) != n:
        raise InputError(f"eval/splits/trust.json: {part}_medquad_rounds {rounds} do not add up to "
                         f"{part}_medquad_added {n}; restore the file from git")
    return rounds


def added_round(split: dict[str, Any], part: str, k: int) -> list[str]:
    """The questions round ``k`` (1 = the first; -1 = the latest) of :func:`add_page_questions` appended to ``part``."""
    rounds = rounds_of(split, part)
    if not rounds or not (-len(rounds) <= k <= len(rounds)) or k == 0:
        raise InputError(f"the {part} part has {len(rounds)} added round(s), not a round {k}")
    i = k - 1 if k > 0 else len(rounds) + k
    start = len(split[part]["medquad"]) - sum(rounds) + sum(rounds[:i])
    return split[part]["medquad"][start:start + rounds[i]]


def all_added(split: dict[str, Any]) -> set[str]:
    """Every question a split extension (:func:`add_page_questions`) appended, in any part."""
    return {i for part in ("dev", "test", "ece") if part in split for i in added(split, part)}


def ece_half(question_id: str) -> str:
    """``"fit"`` or ``"report"``: the half of the ece part a question belongs to, fixed by its id alone (the last hex
    digit of its sha1, even: fit). The ece part was asked as a report set only; from the twenty-first session its fit
    half may also be fitted on (answer calibrations; `eval trust fit --ece-fit ROWS`), and only the report half is then
    reported with test (`python -m eval.trust_ece --ece-half report`)."""
    return "fit" if int(hashlib.sha1(question_id.encode("utf-8")).hexdigest()[-1], 16) % 2 == 0 else "report"


def add_ece_patients(split: dict[str, Any], data_dir: Path, seed: int = 13) -> dict[str, Any]:
    """``split`` with record questions in its ``ece`` part, about the never-trained-on patients that neither dev nor
    test asks about (the rest of test's pool; ~30), asked with the same recipe. Held out for measuring the answer
    confidence of record answers (dev has ~30 of them, test ~30); the other parts are left as they are."""
    if "ece" not in split:
        raise InputError("the trust split has no ece part; add it first: `python app.py eval trust split --ece 500`")
    dev_patients, pool = _patient_pools(data_dir)
    asked = {q["patient_id"] for part in ("dev", "test") for q in split[part]["patient"]} | set(dev_patients)
    out = dict(split)
    out["ece"] = {**split["ece"], "patient": _patient_questions([p for p in pool if p not in asked], seed)}
    out["counts"] = {**split["counts"], "ece": {suite: len(v) for suite, v in out["ece"].items()}}
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise InputError(f"{path} not found (the written question sets of eval/questions/)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write(split: dict[str, Any], path: Path = TRUST_SPLIT) -> None:
    write_split(split, path)


def load(path: Path = TRUST_SPLIT) -> dict[str, Any]:
    return read_split_file(path, ("dev", "test"), "python app.py eval trust split", "a trust split")


def materialise(split: dict[str, Any], data_dir: Path, out: Path) -> list[str]:
    """Copy the trust index's MedQuAD files to ``out``; the index sources, demo corpus and records included."""
    src = data_dir / "medquad"
    if out.exists():
        shutil.rmtree(out)
    for rel in split["index_medquad_files"]:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dst)
    return [f"medquad:{out}", *(str(p) for p in DEMO_SOURCES), f"uci-heart-failure:{data_dir / HF_CSV}"]


def questions(split: dict[str, Any], part: str, data_dir: Path) -> list[dict[str, Any]]:
    """The questions of one part, each with its suite, expected outcome and what scoring needs."""
    if part not in split:
        add = " --ece 500" if part == "ece" else ""
        raise InputError(f"the trust split has no {part!r} part; add it with `python app.py eval trust split{add}`")
    p = split[part]
    ids = set(p["medquad"]) | set(p["topic_removed"])
    docs = {d.doc_id: d for d in load_sources([f"medquad:{data_dir / 'medquad'}"]).documents}
    missing = ids - set(docs)
    if missing:
        raise InputError(f"{len(missing)} MedQuAD ids of the trust split are not in {data_dir / 'medquad'}")
    by_answer: dict[str, set[str]] = defaultdict(set)
    index_files = set(split["index_medquad_files"])
    for d in docs.values():
        if d.source.rsplit("#", 1)[0] in index_files:
            by_answer[" ".join(d.text.lower().split())].add(d.doc_id)
    out: list[dict[str, Any]] = []
    for doc_id in p["medquad"]:
        d = docs[doc_id]
        gold = by_answer[" ".join(d.text.lower().split())] | {doc_id}
        out.append({"suite": "medquad", "id": doc_id, "question": str(d.meta["question"]).strip(),
                    "answerable": True, "gold": sorted(gold)})
    for doc_id in p["topic_removed"]:
        out.append({"suite": "topic_removed", "id": doc_id, "question": str(docs[doc_id].meta["question"]).strip(),
                    "answerable": False})
    facts = {f.key: f for f in FACTS}
    for i, q in enumerate(p["patient"]):
        who = "this patient" if q["who"] == "this patient" else f"patient {q['patient_id']}"
        if q["fact"] is None:
            text = UNANSWERABLE[q["template"]].format(who=who)
        else:
            text = facts[q["fact"]].questions[q["template"]].format(who=who)
        out.append({"suite": "patient", "id": f"patient-{i:03d}-{q['patient_id']}", "question": text,
                    "patient_id": q["patient_id"], "fact": q["fact"], "answerable": q["fact"] is not None})
    for name in ("non_medical", "demo_answerable", "demo_out_of_corpus"):
        rows = {r["id"]: r for r in _read_jsonl(QUESTIONS / f"{name}.jsonl")}
        for qid in p[name]:
            r = rows[qid]
            out.append({"suite": name, "id": qid, "question": r["question"],
                        "answerable": name == "demo_answerable", "gold": r.get("gold_doc_ids", []),
                        "key_facts": r.get("key_facts", []), "required": r.get("required", [])})
    return out
