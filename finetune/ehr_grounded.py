"""Grounded answering over a patient's record (``--patient`` prompts): the value asked, cited, or abstain.

The first adapter saw only guideline-style grounded prompts and, asked for a patient's ejection
fraction, answered with a phenotype label instead of the number. These examples put a question
about one heart-failure patient in exactly the runtime prompt (:func:`rag.generate.build_messages`
with ``patient_id``), with the sources the product's own patient-scoped retrieval returns (that
patient's record sections among guideline passages), and a target that states the asked value in
the record's own words with ``[n]`` on the record's source. Questions the record cannot answer
(potassium, medications, NYHA class ...) get the abstention reply. Patients keep their split from
the heart-failure part, so no test patient's record is trained on.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from corpora.heart_failure import HFRecord, ef_category, format_number, range_flag
from rag.generate import ABSTAIN_TOKEN, PromptSource, build_messages, fit_sources


@dataclass(frozen=True)
class Fact:
    key: str
    questions: tuple[str, ...]  # "{who}" is "this patient" or the patient id
    needle: Callable[[HFRecord], str]  # text that must be in the cited source (the record's own line)
    answer: Callable[[HFRecord, str, int], str]  # (record, who, source number) -> cited target


def _range(v: float, lo: float, hi: float) -> str:
    return {"low": "below", "high": "above"}.get(range_flag(v, lo, hi), "within") + " the reference range"


def _creat_ref(r: HFRecord) -> tuple[float, float]:
    return (0.7, 1.3) if r.male else (0.6, 1.1)


def _yes_no(label: str, attr: str, line: str) -> Fact:
    """A yes/no comorbidity; ``line`` is the record's label for it."""
    return Fact(
        attr,
        (f"Does {{who}} have {label}?", f"Is {label} documented for {{who}}?"),
        lambda r: f"{line}: {'yes' if getattr(r, attr) else 'no'}",
        lambda r, who, n: (f"Yes, the record of {who} lists {label} [{n}]." if getattr(r, attr)
                           else f"No, the record of {who} states no {label} [{n}]."),
    )


FACTS: tuple[Fact, ...] = (
    Fact("ejection_fraction",
         ("What is the latest ejection fraction of {who}?", "What is the LVEF of {who}?",
          "What did the echocardiogram show for {who}'s ejection fraction?"),
         lambda r: f"Left ventricular ejection fraction: {format_number(r.ejection_fraction)}%",
         lambda r, who, n: (f"The left ventricular ejection fraction of {who} is {format_number(r.ejection_fraction)}% "
                            f"(normal 50-70%) [{n}]. This is in the {ef_category(r.ejection_fraction)} [{n}].")),
    Fact("serum_creatinine",
         ("What is the serum creatinine of {who}?", "How is {who}'s kidney function (creatinine)?"),
         lambda r: f"Serum creatinine: {format_number(r.serum_creatinine)} mg/dL",
         lambda r, who, n: (f"The serum creatinine of {who} is {format_number(r.serum_creatinine)} mg/dL, "
                            f"{_range(r.serum_creatinine, *_creat_ref(r))} of {_creat_ref(r)[0]}-"
                            f"{_creat_ref(r)[1]} mg/dL [{n}].")),
    Fact("serum_sodium",
         ("What is the serum sodium of {who}?", "Is {who} hyponatraemic?"),
         lambda r: f"Serum sodium: {format_number(r.serum_sodium)} mEq/L",
         lambda r, who, n: (f"The serum sodium of {who} is {format_number(r.serum_sodium)} mEq/L, "
                            f"{_range(r.serum_sodium, 135, 145)} of 135-145 mEq/L [{n}].")),
    Fact("platelets",
         ("What is the platelet count of {who}?",),
         lambda r: f"Platelets: {round(r.platelets):,} per microlitre",
         lambda r, who, n: (f"The platelet count of {who} is {round(r.platelets):,} per microlitre, "
                            f"{_range(r.platelets, 150_000, 450_000)} of 150,000-450,000 [{n}].")),
    Fact("creatinine_phosphokinase",
         ("What is the CPK level of {who}?",),
         lambda r: f"Creatine phosphokinase (CPK): {format_number(r.creatinine_phosphokinase)} mcg/L",
         lambda r, who, n: (f"The creatine phosphokinase (CPK) of {who} is {format_number(r.creatinine_phosphokinase)} "
                            f"mcg/L, {_range(r.creatinine_phosphokinase, 10, 120)} of 10-120 mcg/L [{n}].")),
    Fact("age",
         ("How old is {who}?", "What are the age and sex of {who}?"),
         lambda r: f"Age: {format_number(r.age)} years",
         lambda r, who, n: f"{who[0].upper()}{who[1:]} is a {format_number(r.age)}-year-old "
                           f"{'man' if r.male else 'woman'} [{n}]."),
    _yes_no("diabetes", "diabetes", "Diabetes"),
    _yes_no("high blood pressure", "high_blood_pressure", "High blood pressure"),
    _yes_no("anaemia", "anaemia", "Anaemia (reduced red cells or haemoglobin)"),
    Fact("smoking",
         ("Is {who} a current smoker?", "Does {who} smoke?"),
         lambda r: f"Current smoker: {'yes' if r.smoking else 'no'}",
         lambda r, who, n: (f"Yes, the record of {who} lists them as a current smoker [{n}]." if r.smoking
                            else f"No, the record of {who} states they are not a current smoker [{n}].")),
)

# Nothing in these records answers these: the reply is the abstention, whatever guideline text
# about the topic was retrieved beside the record.
UNANSWERABLE: tuple[str, ...] = (
    "What is the serum potassium of {who}?", "What is the NT-proBNP of {who}?",
    "Which medications is {who} taking?", "What is the NYHA class of {who}?",
    "What is the blood pressure reading of {who}?", "What is the heart rate of {who}?",
    "What is the haemoglobin A1c of {who}?", "What is the LDL cholesterol of {who}?",
    "What is the QRS duration on {who}'s ECG?", "What is the body weight of {who}?",
    "What is the haemoglobin level of {who}?", "Is {who} in atrial fibrillation?",
)


def _who(r: HFRecord, rng: random.Random) -> str:
    # The demo asks "this patient"; notes and users also name the id.
    return "this patient" if rng.random() < 0.6 else f"patient {r.patient_id}"


def ehr_examples(records: list[HFRecord], split_of: dict[str, str], assistant: Any,
                 count_tokens: Callable[[str], int], hidden_doc_ids: set[str], source_tokens: int, seed: int,
                 per_patient: int, abstain_share: float, stats: Counter[str]) -> list[dict[str, Any]]:
    """Example fields (see :class:`finetune.data.Example`) for ``per_patient`` questions per patient."""
    index = assistant.index
    retriever = assistant.retriever()
    top_k = assistant.config.retrieval.top_k
    hidden_rows = [i for i, c in enumerate(index.children) if c.doc_id in hidden_doc_ids]
    plans: list[tuple[HFRecord, str, Fact | None, random.Random]] = []
    for r in records:
        if r.patient_id not in index.patients:
            stats["grounded_ehr.skipped.patient_not_indexed"] += 1
            continue
        rng = random.Random(f"{seed}-ehr-{r.patient_id}")
        for f in rng.sample(FACTS, per_patient):
            plans.append((r, rng.choice(f.questions).format(who=_who(r, rng)), f, rng))
        if rng.random() < abstain_share:
            plans.append((r, rng.choice(UNANSWERABLE).format(who=_who(r, rng)), None, rng))
    out: list[dict[str, Any]] = []
    for start in range(0, len(plans), 64):
        chunk = plans[start: start + 64]
        qvs = assistant.embedder.encode_queries([q for _, q, _, _ in chunk]).astype(np.float32)
        for (r, q, fact, rng), qv in zip(chunk, qvs, strict=True):
            allowed = index.allowed_mask(r.patient_id)  # a fresh array per call
            allowed[hidden_rows] = False
            units = retriever.search(q, qv, r.patient_id, top_k, allowed=allowed).units
            sources = fit_sources([PromptSource(n, u.chunk.title, u.chunk.section, u.chunk.kind, u.chunk.patient_id,
                                                u.chunk.text) for n, u in enumerate(units, 1)],
                                  count_tokens, source_tokens)
            if fact is None:
                target, n_cited = ABSTAIN_TOKEN, None
            else:
                needle = fact.needle(r)
                n_cited = next((s.n for s in sources if s.patient_id == r.patient_id and needle in s.text), None)
                if n_cited is None:
                    stats["grounded_ehr.skipped.record_line_not_retrieved"] += 1
                    continue
                who = "this patient" if "this patient" in q else f"patient {r.patient_id}"
                target = fact.answer(r, who, n_cited)
            stats[f"grounded_ehr.{'withheld' if fact is None else fact.key}"] += 1
            out.append({
                "id": f"ehr-{r.patient_id}-{fact.key if fact else 'abstain'}-{rng.randrange(10**6)}",
                "part": "grounded_ehr", "source": "uci-heart-failure", "group": f"patient:{r.patient_id}",
                "split": split_of.get(f"patient:{r.patient_id}", "train"),
                "prompt": build_messages(q, sources, r.patient_id),
                "completion": [{"role": "assistant", "content": target}],
                "meta": {"patient_id": r.patient_id, "fact": fact.key if fact else None, "withheld": fact is None,
                         "gold_n": n_cited, "n_sources": len(sources),
                         "source_doc_ids": [u.chunk.doc_id for u in units[: len(sources)]]},
            })
    return out
