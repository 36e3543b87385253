"""The distilled reranker's data, labelling and folder checks (no real model: a 2-layer random BERT at most)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from finetune.reranker import RerankTrainOptions, agreement, label, save_student, truncate
from finetune.reranker_data import RerankDataOptions, RerankPair, candidates
from finetune.verifier_data import QADoc
from rag.cross_encoder import MARKER, DistilledReranker
from rag.errors import InputError


def _doc(i: int, group: str, focus: str, words: str, asks: str = "treatment") -> QADoc:
    return QADoc(f"d{i}", f"what is the {asks} of {focus}?", focus, group,
                 [f"{focus} — p{j}\n{words} passage {j} of d{i}" for j in range(3)], "medquad")


def test_candidates_put_own_then_siblings_then_bm25_of_other_pages():
    pool = [_doc(0, "g0", "gout", "gout treatment colchicine"), _doc(1, "g0", "gout", "gout causes uric acid", "cause"),
            *[_doc(i, f"g{i}", f"cond{i}", "treatment of gout flares with drugs") for i in range(2, 12)]]
    opts = RerankDataOptions(candidates=6, own=2, siblings=1, styled_share=0.0, vignette_share=0.0)
    stats: Counter[str] = Counter()
    pairs = candidates([pool[0]], pool, opts, random.Random(0), stats)
    assert [p.kind for p in pairs] == ["own", "own", "sibling", "bm25", "bm25", "bm25"]
    assert [p.gold for p in pairs] == [1, 1, 0, 0, 0, 0]
    assert pairs[2].passage == pool[1].passages[0]
    own = set(pool[0].passages)
    assert not own & {p.passage for p in pairs if p.kind != "own"}  # BM25 never brings the question's own page back
    assert len({p.passage for p in pairs}) == len(pairs) and stats["pairs.bm25"] == 3


def test_label_resumes_from_its_file_and_drops_a_cut_line(tmp_path: Path):
    pairs = [RerankPair(f"q{i}", f"p{i}", "d", "own", 1) for i in range(7)]
    calls: list[int] = []

    def score(batch: list[tuple[str, str]]) -> np.ndarray:
        calls.append(len(batch))
        return np.array([int(b[1][1:]) / 10 for b in batch])

    path = tmp_path / "labels.jsonl"
    path.write_text("0.000000\n0.100000\n0.2", encoding="utf-8")  # two complete lines, one cut by a kill
    out = label(pairs, score, path, block=3)
    assert out == pytest.approx([i / 10 for i in range(7)])
    assert calls == [3, 2]  # pairs 2..6 only
    assert path.read_text().split() == [f"{i / 10:.6f}" for i in range(7)]
    with pytest.raises(TimeoutError, match="0 of 7"):
        label(pairs, score, tmp_path / "other.jsonl", block=3, deadline=0.0)


def test_agreement_counts_same_top_passage_per_question():
    t = np.array([0.9, 0.1, 0.2, 0.8, 0.3])
    s = np.array([0.7, 0.2, 0.1, 0.2, 0.6])
    a = agreement(t, s, ["a", "a", "a", "b", "b"], [1, 0, 0, 1, 0])
    assert a["same_top_passage"] == 50.0 and a["questions"] == 2
    assert a["auroc_own_answer"]["teacher"] == 1.0


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer BERT classifier with a word-level tokenizer, cut to 2 layers and saved as a student."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = "[PAD] [UNK] [CLS] [SEP] question : gout treatment colchicine causes uric acid".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=3,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=1))
    for prm in model.parameters():  # as the verifier comes out of PEFT: base weights frozen
        prm.requires_grad_(False)
    student = truncate(model, 2, ffn=24)
    frozen = {n for n, prm in student.named_parameters() if not prm.requires_grad}
    assert frozen == {"bert.embeddings.word_embeddings.weight"}
    assert len(student.bert.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    assert student.bert.encoder.layer[1].intermediate.dense.out_features == 24 == student.config.intermediate_size
    with pytest.raises(ValueError, match="layers"):
        truncate(model, 0)
    out = tmp_path_factory.mktemp("student") / "minilm-l2"
    save_student(student, fast, out, {"teacher": "test"}, RerankTrainOptions(layers=2, max_length=32))
    return out


def test_saved_student_loads_and_scores_like_the_model(tiny_bert_folder: Path):
    spec = json.loads((tiny_bert_folder / MARKER).read_text())
    assert spec["layers"] == 2 and spec["model_id"].startswith("cds/minilm-l2@")
    r = DistilledReranker(tiny_bert_folder)
    p = r.answerability("gout treatment", ["colchicine", "uric acid causes", "gout"])
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    assert r.answerability("gout", []).shape == (0,)
    q = DistilledReranker(tiny_bert_folder, int8=True)
    assert q.model_id.endswith("+int8")
    assert np.abs(q.answerability("gout treatment", ["colchicine", "uric acid causes", "gout"]) - p).max() < 0.1


def test_cls_only_last_layer_gives_the_models_own_logits(tiny_bert_folder: Path):
    import torch

    from rag.cross_encoder import cls_logits

    r = DistilledReranker(tiny_bert_folder)
    r._load()
    enc = r._tok(["question : gout", "question : uric acid causes gout"], ["colchicine treatment", "gout"],
                 padding=True, return_tensors="pt")
    assert enc["attention_mask"].min() == 0  # padding is masked the same way
    with torch.inference_mode():
        assert torch.allclose(cls_logits(r._model, enc), r._model(**enc).logits, atol=1e-5)


def test_bad_reranker_folders_are_one_line_input_errors(tmp_path: Path, tiny_bert_folder: Path):
    with pytest.raises(InputError, match=r"not found; build one with `python app\.py train reranker`"):
        DistilledReranker(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"not a distilled reranker \\(no {MARKER}\\)"):
        DistilledReranker(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MARKER).write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        DistilledReranker(bad)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MARKER).write_text((tiny_bert_folder / MARKER).read_text())  # the marker without the weights
    r = DistilledReranker(broken)
    with pytest.raises(InputError, match="cannot be loaded") as e:
        r.answerability("q", ["p"])
    assert "\n" not in str(e.value)


def test_fit_with_logit_mse_learns_and_a_resume_with_other_options_is_refused(tmp_path: Path,
                                                                              tiny_bert_folder: Path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune.reranker import fit

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_folder))
    tok = AutoTokenizer.from_pretrained(str(tiny_bert_folder))
    pairs = [RerankPair("gout treatment", "colchicine", "a", "own", 1),
             RerankPair("gout treatment", "uric acid causes", "a", "bm25", 0),
             RerankPair("uric acid causes", "uric acid", "b", "own", 1),
             RerankPair("uric acid causes", "colchicine treatment", "b", "bm25", 0)]
    targets = [0.99, 0.02, 0.95, 0.001]
    opts = RerankTrainOptions(layers=2, batch_size=4, epochs=150, learning_rate=1e-2, loss="mse", save_steps=50,
                              max_length=32)
    out = fit(model, tok, pairs, targets, opts, tmp_path, None, lambda _: None)
    assert out["steps_done"] == 150 and out["loss_last"] < out["loss_first"] / 2
    with torch.inference_mode():
        enc = tok(["question : " + p.question for p in pairs], [p.passage for p in pairs], padding=True,
                  return_tensors="pt")
        logits = model(**enc).logits.squeeze(-1)
    assert logits[0] > logits[1] and logits[2] > logits[3]  # the teacher's order, on its logit scale
    other = RerankTrainOptions(layers=2, batch_size=4, epochs=150, learning_rate=1e-2, loss="bce", max_length=32)
    with pytest.raises(ValueError, match=r"loss mse -> bce.*--overwrite"):
        fit(model, tok, pairs, targets, other, tmp_path, None, lambda _: None)
    with pytest.raises(ValueError, match="loss must be"):
        fit(model, tok, pairs, targets, RerankTrainOptions(loss="l1"), tmp_path / "x", None, lambda _: None)
