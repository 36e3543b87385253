"""``app.py train [run|data|verifier|risk]``: fine-tuning and the data it needs (:mod:`finetune`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rag.cli import load_config, print_json, say


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    tr = sub.add_parser("train", parents=[common], help="fine-tune the generator (LoRA/QLoRA) or build its data",
                        description="`train data` builds the SFT dataset; `train` (or `train run`) trains an adapter "
                                    "with the config's train: section, e.g. --config configs/train-qwen0.5b-cpu.yaml")
    tr.add_argument("action", nargs="?", choices=["run", "data", "verifier", "embedder", "reranker", "risk"],
                    default="run",
                    help="run: the generator's adapter; data: its dataset; verifier: the evidence verifier "
                         "(pairs from ../shared/data, then the LoRA cross-encoder; resumable); embedder: contrastive "
                         "fine-tuning of embedder.model on MedQuAD/WikiDoc questions (resumable, time-capped; "
                         "writes .cds/embedder/NAME with a card); reranker: distil the verifier's answerability into "
                         "its first --layers layers (teacher labels, then training; resumable, time-capped by "
                         "--max-minutes; writes .cds/reranker/minilm-lN with a card); risk: fit and "
                         "validate the heart-failure risk model (configs/risk/, docs/risk-calibration.png)")
    tr.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides train.epochs)")
    tr.add_argument("--resume", action="store_true", help="continue from the last checkpoint in train.run_dir")
    tr.add_argument("--overwrite", action="store_true", help="discard existing checkpoints and start again")
    tr.add_argument("--out", help="`train data`: output folder (default: train.data_dir)")
    tr.add_argument("--source-set", default="full", help="`train data`: source set with the MedQuAD, WikiDoc and "
                                                          "heart-failure inputs (default: full)")
    tr.add_argument("--no-index", action="store_true", help="`train data`: skip the grounded part (needs the "
                                                            "full index)")
    tr.add_argument("--max-minutes", type=float, default=50.0,
                    help="`train embedder`/`train reranker`: wall-time cap (default 50; it stops checkpointed)")
    tr.add_argument("--batch-size", type=int, default=32, help="`train embedder`: batch size (default 32)")
    tr.add_argument("--layers", type=int, default=2,
                    help="`train reranker`: transformer layers the student keeps of the verifier's 6 (default 2)")
    tr.add_argument("--ffn", type=int, default=384,
                    help="`train reranker`: feed-forward units kept per layer of 1,536 (default 384; 0: all)")
    tr.add_argument("--questions", type=int, default=None,
                    help="`train reranker`: training questions (12 passages each; default 1,200)")
    tr.add_argument("--max-pairs", type=int, default=None,
                    help="`train reranker`: label and train on the first N pairs only (the time box; default all)")
    tr.add_argument("--learning-rate", type=float, default=None,
                    help="`train reranker`: peak learning rate (default 2e-4)")
    tr.add_argument("--epochs", type=float, default=None,
                    help="`train reranker`: passes over the training pairs (default 1)")
    tr.add_argument("--loss", choices=("bce", "mse"), default=None,
                    help="`train reranker`: bce on the teacher's probabilities (default) or mse on its logits")
    tr.add_argument("--task", choices=("answerable", "support"), default=None,
                    help="`train verifier`: train and measure one task only (answerable: an adapter for "
                         "verifier.answerability_adapter; default: both)")
    tr.add_argument("--json", action="store_true")
    tr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    actions = {"data": _data, "verifier": _verifier, "embedder": _embedder, "reranker": _reranker, "risk": _risk,
               "run": _adapter}
    return actions[args.action](args, cfg)


def _adapter(args: argparse.Namespace, cfg: Any) -> int:
    from finetune.train import train

    card = train(cfg, max_steps=args.max_steps, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    if args.json:
        print_json(card)
        return 0
    v = card["val_loss"]
    print(f"adapter written to {cfg.train.output_dir}: {card['steps']} steps, {card['trainable_parameters']:,} "
          f"trainable parameters ({', '.join(card['lora']['target_modules'])}); val loss {v['base']} -> {v['final']}; "
          f"{card['train_samples_per_second']} samples/s")
    return 0


def _risk(args: argparse.Namespace, cfg: Any) -> int:
    from finetune.hf_risk_model import comparison_table, train
    from rag.config import PROJECT_ROOT, data_dir, resolve_path
    from rag.errors import InputError
    from rag.hf_model import DEFAULT_MODEL

    csv_path = data_dir(cfg) / "heart_failure" / "heart_failure_clinical_records_dataset.csv"
    if not csv_path.is_file():
        raise InputError(f"{csv_path} not found; set index.data_dir (or CDS_DATA_DIR) to the folder holding "
                         "heart_failure/")
    out = resolve_path(args.out) if args.out else DEFAULT_MODEL
    card = train(csv_path, out, PROJECT_ROOT / "docs" / "risk-calibration.png", say=say(args.quiet))
    if args.json:
        print_json(card)
        return 0
    print(comparison_table(card), end="")
    print(f"model and card written to {out} and {out.parent / 'MODEL_CARD.md'}; plot docs/risk-calibration.png")
    return 0


def _verifier(args: argparse.Namespace, cfg: Any) -> int:
    import shutil

    from finetune import verifier, verifier_data
    from rag.config import resolve_path
    from rag.models import resolve

    data_out = resolve_path(".cds/verifier/data")
    # The resumable run lives beside an --out adapter, so training another base (verifier.model) elsewhere
    # never resumes from, or removes, the default run.
    run_dir = resolve_path(f"{args.out}-run") if args.out else resolve_path(".cds/verifier/run")
    if args.overwrite and run_dir.exists():
        shutil.rmtree(run_dir)
    if not (data_out / "train.jsonl").exists() or args.overwrite:
        # Pairs cut by the index's own chunker and the embedder's tokenizer: what the verifier reads at run time.
        verifier_data.build_v2_pairs(cfg, data_out)
    base = resolve(cfg.verifier.model, resolve_path(cfg.models.cache_dir)).path
    out = resolve_path(args.out or cfg.verifier.adapter)
    # a checkpoint every 50 steps: ~1 min on all-MiniLM-L6-v2, ~8 min on all-mpnet-base-v2 (2 cores)
    card = verifier.train(data_out, base, out, run_dir, verifier.VerifierTrainOptions(save_steps=50, task=args.task),
                          progress=not args.quiet)
    if args.json:
        print_json(card)
        return 0
    for task, m in card["heldout"].items():
        print(f"{task}: AUROC {m['auroc']}, precision {m['precision']}, recall {m['recall']} at {m['threshold']} "
              f"({m['n']} held-out pairs)")
    print(f"verifier adapter written to {out}")
    return 0


def _embedder(args: argparse.Namespace, cfg: Any) -> int:

    from finetune import embedder, embedder_data, verifier_data
    from finetune.heldout import load_split
    from rag.config import data_dir, resolve_path
    from rag.models import resolve

    out = resolve_path(args.out or ".cds/embedder/minilm-medical")
    data_out, run_dir = _work_dirs(out, args.overwrite)
    if not (data_out / "train.jsonl").exists():
        # Passages cut by the index's own chunker: exactly what the index embeds (Chunk.context_text()).
        passages_of = verifier_data.index_passages(cfg)
        parts, dcard = embedder_data.build(data_dir(cfg), load_split(), embedder_data.EmbedderDataOptions(),
                                           passages_of)
        embedder_data.write(parts, dcard, data_out)
        say(args.quiet)(f"{len(parts['train']):,} training / {len(parts['heldout']):,} held-out triplets in {data_out}")
    base = resolve(cfg.embedder.model, resolve_path(cfg.models.cache_dir))
    opts = embedder.EmbedderTrainOptions(max_steps=args.max_steps, max_minutes=args.max_minutes,
                                         batch_size=args.batch_size)
    card = embedder.train(data_out, base.path, base.model_id, out, run_dir, opts, out.name, progress=not args.quiet)
    if args.json:
        print_json(card)
        return 0
    h = card["heldout"]
    print(f"held-out pages, nDCG@10 / recall@1: base {h['base']['ndcg@10']} / {h['base']['recall@1']}, tuned "
          f"{h['tuned']['ndcg@10']} / {h['tuned']['recall@1']} ({h['tuned']['n']} questions)")
    print(f"embedder {card['model_id']} written to {out} ({card['steps_done']} steps, "
          f"{card['train_seconds_total'] / 60:.1f} min); use --set embedder.model={out} and rebuild the index")
    return 0


def _reranker(args: argparse.Namespace, cfg: Any) -> int:

    from corpora import load_sources
    from finetune import reranker, reranker_data, verifier_data
    from finetune.heldout import load_split
    from rag.config import data_dir, resolve_path
    from rag.errors import InputError
    from rag.models import resolve
    from rag.verifier import Verifier

    ffn = args.ffn or None
    out = resolve_path(args.out or f".cds/reranker/minilm-l{args.layers}" + (f"-ffn{ffn}" if ffn else ""))
    data_out, run_dir = _work_dirs(out, args.overwrite)
    if not (data_out / "heldout.jsonl").exists():
        passages_of = verifier_data.index_passages(cfg)
        root = data_dir(cfg)
        wd_path = root / "wikidoc_patient_info" / "medical_meadow_wikidoc_patient_information.json"
        mq = load_sources([f"medquad:{root / 'medquad'}"]).documents
        wd = load_sources([f"wikidoc:{wd_path}"]).documents if wd_path.exists() else []
        opts = reranker_data.RerankDataOptions()
        if args.questions:
            opts.questions = args.questions
        parts, dcard = reranker_data.build_from(mq, wd, load_split(), opts, passages_of)
        reranker_data.write(parts, dcard, data_out)
        say(args.quiet)(f"{len(parts['train']):,} training / {len(parts['heldout']):,} held-out pairs in {data_out}")
    v = cfg.verifier
    base = resolve(v.model, resolve_path(cfg.models.cache_dir)).path
    teacher = Verifier(base, resolve_path(v.answerability_adapter or v.adapter))
    opts_t = reranker.RerankTrainOptions(layers=args.layers, ffn=ffn, max_minutes=args.max_minutes,
                                         max_pairs=args.max_pairs)
    for name in ("learning_rate", "epochs", "loss"):
        if getattr(args, name) is not None:
            setattr(opts_t, name, getattr(args, name))
    try:
        card = reranker.train(data_out, teacher, out, run_dir, opts_t, say(args.quiet))
    except TimeoutError as e:
        again = " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("learning_rate", "epochs", "loss",
                                                                                  "max_pairs")
                         if getattr(args, k) is not None)
        raise InputError(f"{e} (`python app.py train reranker --layers {args.layers} --ffn {args.ffn}"
                         f"{' ' + again if again else ''}`, same --out)") from None
    except ValueError as e:  # options that do not fit the model or the checkpoint
        raise InputError(str(e)) from None
    if args.json:
        print_json(card)
        return 0
    h = card["heldout"]
    print(f"held-out: student vs teacher Spearman {h['spearman']}, same top passage {h['same_top_passage']}%, "
          f"AUROC own answer teacher {h['auroc_own_answer']['teacher']} / student {h['auroc_own_answer']['student']}")
    print(f"reranker {card['model_id']} written to {out} ({card['train_seconds_total'] / 60:.1f} min); use "
          f"--set retrieval.rerank=true --set retrieval.reranker={out}")
    return 0


def _data(args: argparse.Namespace, cfg: Any) -> int:
    from finetune import data
    from finetune.heldout import held_out_doc_ids
    from rag import Assistant
    from rag.config import resolve_path, source_set
    from rag.models import load_tokenizer

    t = cfg.train
    inputs = data.inputs_from_sources(source_set(cfg, args.source_set))
    opts = data.DataOptions(seed=t.seed, grounded_questions=0 if args.no_index else t.grounded_questions,
                            withheld_share=t.withheld_share, source_tokens=t.source_tokens, hf_format=t.hf_format,
                            clinician_questions=str(resolve_path(t.clinician_questions)) if t.clinician_questions
                            else None)
    tok = load_tokenizer(cfg.generator.model, resolve_path(cfg.models.cache_dir))

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    assistant = None if args.no_index else Assistant.open(cfg, progress=not args.quiet)
    examples, card = data.build(inputs, held_out_doc_ids(), opts, assistant, count, progress=not args.quiet)
    out = Path(args.out) if args.out else resolve_path(t.data_dir)
    data.write(examples, card, out)
    if args.json:
        print_json(card)
        return 0
    print(data.card_markdown(card))
    print(f"written to {out}")
    return 0


def _work_dirs(out: Any, overwrite: bool) -> tuple[Any, Any]:
    """The training data and run folders beside ``out``; emptied with ``--overwrite``."""
    import shutil

    data_out, run_dir = out.with_name(out.name + ".data"), out.with_name(out.name + ".run")
    if overwrite:
        for d in (run_dir, data_out):
            if d.exists():
                shutil.rmtree(d)
    return data_out, run_dir
