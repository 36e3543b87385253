"""Prompt formats, compatible in spirit with lm-evaluation-harness's ``mmlu_*`` and ``medmcqa`` tasks.

- ``mmlu``: "The following are multiple choice questions (with answers) about {subject}.\\n\\n", then
  each exemplar and the question as "{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:", exemplars
  followed by " {letter}\\n\\n".
- ``qa`` (MedMCQA, MedQA, MIRAGE): "Question: {question}\\nChoices:\\nA. ..\\n...\\nAnswer:" with no
  description, as lm-eval's ``medmcqa``.

The option scored is the answer letter after "Answer:" — " A" in a plain prompt (lm-eval's target
delimiter is a space), "A" right after the assistant turn opens when the chat template is used.
Retrieved passages (``--rag``) go between the exemplars and the question, so the exemplar prefix
stays shared by every question of a subject and its key/value cache can be reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from eval.mcq.readers import LETTERS, MCQItem

Style = Literal["mmlu", "qa"]
SPLIT = "\x00<<question>>\x00"  # marks the end of the shared prefix while a chat template renders


@dataclass(frozen=True)
class PromptTemplate:
    """Everything that decides the prompt text; stored and hashed with every run."""

    style: Style
    k_shot: int
    chat_template: bool
    rag: bool
    description: str = "The following are multiple choice questions (with answers) about {subject}.\n\n"
    question: str = "{question}\n{options}\nAnswer:"
    qa_question: str = "Question: {question}\nChoices:\n{options}\nAnswer:"
    option: str = "{letter}. {text}"
    exemplar_end: str = " {letter}\n\n"
    context: str = "Context:\n{passages}\n\n"
    passage: str = "[{n}] {title} — {section}: {text}"
    plain_continuation: str = " {letter}"
    chat_continuation: str = "{letter}"
    chat_template_text: str | None = None  # the tokenizer's Jinja template, when used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def continuation(self, letter: str) -> str:
        return (self.chat_continuation if self.chat_template else self.plain_continuation).format(letter=letter)


@dataclass(frozen=True)
class Passage:
    n: int
    title: str
    section: str
    text: str


def _question_block(t: PromptTemplate, item: MCQItem) -> str:
    options = "\n".join(t.option.format(letter=LETTERS[i], text=o) for i, o in enumerate(item.options))
    fmt = t.question if t.style == "mmlu" else t.qa_question
    return fmt.format(question=item.question.strip(), options=options)


def prefix_body(t: PromptTemplate, subject: str, exemplars: Sequence[MCQItem]) -> str:
    """The part shared by every question of ``subject``: description and k-shot exemplars."""
    parts = [t.description.format(subject=subject.replace("_", " "))] if t.style == "mmlu" else []
    for ex in exemplars[: t.k_shot]:
        parts.append(_question_block(t, ex) + t.exemplar_end.format(letter=LETTERS[ex.answer]))
    return "".join(parts)


def suffix_body(t: PromptTemplate, item: MCQItem, passages: Sequence[Passage] = ()) -> str:
    ctx = ""
    if t.rag and passages:
        ctx = t.context.format(passages="\n".join(
            t.passage.format(n=p.n, title=p.title, section=p.section, text=" ".join(p.text.split()))
            for p in passages))
    return ctx + _question_block(t, item)


def render(prefix: str, suffix: str, chat: Callable[[str], str] | None) -> tuple[str, str]:
    """(shared prefix text, question text). ``chat`` renders one user turn with the model's template."""
    if chat is None:
        return prefix, suffix
    full = chat(prefix + SPLIT + suffix)
    if full.count(SPLIT) != 1:
        raise ValueError("the chat template altered the prompt marker; cannot split the shared prefix")
    head, tail = full.split(SPLIT)
    return head, tail
