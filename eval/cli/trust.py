"""``app.py eval trust split|build|run|fit|report``: abstention, strict correctness and calibrated confidence
(:mod:`eval.trust`, :mod:`eval.trust_jobs`); dev fits, test reports."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from eval.cli import advance, bar
from rag.cli import load_config, print_json


def add(esub: Any, common: argparse.ArgumentParser) -> None:
    et = esub.add_parser("trust", parents=[common], help="trust: abstention out of corpus, strict correctness, "
                         "calibrated confidence (dev fits, test reports)",
                         description="split: write eval/splits/trust.json; build: the trust index; run: ask a part; "
                                     "fit: calibration + thresholds from dev; report: replay the config's settings")
    et.add_argument("action", choices=["split", "build", "run", "fit", "report", "keep"])
    et.add_argument("--part", choices=["dev", "test", "ece"], default="dev",
                    help="ece: more answerable MedQuAD questions, asked like test, pooled with it for ECE "
                         "(`split --ece N` adds them)")
    et.add_argument("--ece", type=int, metavar="N",
                    help="`split`: add an ece part of N answerable MedQuAD questions to the existing split "
                         "(the other parts unchanged)")
    et.add_argument("--dev-medquad", type=int, metavar="N",
                    help="`split`: append the other questions of dev's MedQuAD pages, at most N a page, to the dev "
                         "part (more dev answers for the calibration fit; once)")
    et.add_argument("--test-medquad", type=int, metavar="N",
                    help="`split`: append the other questions of test's MedQuAD pages, at most N a page, to the test "
                         "part (a larger report set for ECE; once; ask them with `run --skip-kept`)")
    et.add_argument("--ece-medquad", type=int, metavar="N",
                    help="`split`: append the other questions of the ece part's MedQuAD pages, at most N a page, to "
                         "the ece part (a fresh report set in its report half; once; `run --ece-half report "
                         "--skip-kept` asks only them)")
    et.add_argument("--again", action="store_true",
                    help="`split --dev-medquad/--test-medquad/--ece-medquad`: add a later round to a part already "
                         "extended (its pages' remaining questions; the earlier rounds stay as they are)")
    et.add_argument("--ece-patients", action="store_true",
                    help="`split`: add record questions about the held-out patients dev and test do not ask about to "
                         "the ece part (for the record answers' confidence)")
    et.add_argument("--output", default=".cds/eval/trust", help="run folder (rows-PART.jsonl, summaries, plots)")
    et.add_argument("--trust-index", default=".cds/index/trust", help="the trust index folder (`build` writes it)")
    et.add_argument("--floor", type=float, default=0.05,
                    help="`run`: generate when answerability reaches this (stricter gates are replayed)")
    et.add_argument("--batch-size", type=int, default=8)
    et.add_argument("--limit", type=int, help="`run`: the first N questions of each suite only (a smoke test)")
    et.add_argument("--resume", action="store_true",
                    help="`run`: keep an interrupted run's answers (rows-PART.journal.jsonl); ask only the rest")
    et.add_argument("--suite", action="append", metavar="NAME",
                    help="`run`: only this suite (repeatable; e.g. demo_answerable) for a diagnostic run")
    et.add_argument("--regenerate-above", type=float, metavar="P",
                    help="`run`: ask again, with no gate, the questions of an earlier run that were not generated "
                         "but whose gate probability (the dev-fitted gate model in --gate-from) reaches P; merged "
                         "into that run's records")
    et.add_argument("--gate-from", help="calibration JSON with the gate model (for --regenerate-above)")
    et.add_argument("--replay", metavar="ROWS.jsonl",
                    help="`run`: reuse the generator's drafts of an earlier run for the same prompts (every check is "
                         "recomputed with the current verifier and settings; only new prompts are generated)")
    et.add_argument("--skip-kept", metavar="FILE.jsonl",
                    help="`run`: do not ask questions whose outcome is kept in this eval/results/ file under this "
                         "config's fingerprint (a part asked over several sessions)")
    et.add_argument("--added-only", action="store_true",
                    help="`run`: ask only the questions `split --dev-medquad/--test-medquad/--ece-medquad` appended")
    et.add_argument("--ece-half", choices=["fit", "report"],
                    help="`run --part ece`: ask one half only (eval.trust_set.ece_half; a calibration fitted on the "
                         "fit half is reported on the report half)")
    et.add_argument("--to", metavar="FILE.jsonl",
                    help="`keep`: the eval/results/ file that gets this run's outcomes (ids and numbers only)")
    et.add_argument("--labels", action="append", metavar="FILE.jsonl", default=[],
                    help="`fit`/`report`: a person's verdicts on this run's answers (eval/labels/); they replace the "
                         "automatic verdict for the exact answers they judged (repeatable)")
    et.add_argument("--min-ooc-abstain", type=float, default=0.97,
                    help="`fit`: the dev out-of-corpus abstention the chosen operating point must reach (target 0.95 "
                         "plus a margin: eval/trust_procedure.py)")
    et.add_argument("--gate-features", metavar="F1,F2,...",
                    help="`fit`: the gate model's signals (default: answerability_logit,retrieval,agreement; "
                         "`python -m eval.trust_gate --cv 5` compares sets on dev)")
    et.add_argument("--offset", action="append", default=[], metavar="SIGNAL",
                    help="`fit`: add SIGNAL to the fitted calibration as one coefficient with the others frozen "
                         "(e.g. patient_scoped: corrects record answers without moving the rest)")
    et.add_argument("--onto", metavar="CALIBRATION.json",
                    help="`fit` with --offset and/or --rechoose: start from this calibration (its coefficients and "
                         "gate model kept) instead of refitting everything")
    et.add_argument("--refit-answers", action="store_true",
                    help="`fit --onto`: fit the answer calibration (signals, regularisation, coefficients) again on "
                         "dev at that calibration's gate and thresholds, which are kept")
    et.add_argument("--rescale", action="store_true",
                    help="`fit --onto`: a slope and an intercept on that calibration's logit (Platt scaling), fitted "
                         "on the dev answers it was not fitted on: those of the questions `split --dev-medquad` added")
    et.add_argument("--ece-fit", metavar="ROWS.jsonl",
                    help="`fit --onto`: an ece run's records; the answers of its fit half (eval.trust_set.ece_half) "
                         "are what --rescale fits on, and join dev's for --refit-answers (ece verdicts in --labels)")
    et.add_argument("--rechoose", action="store_true",
                    help="`fit --onto`: choose the operating point (gate, threshold, cosine rescue, support bar) "
                         "again on dev for that calibration's coefficients")
    et.add_argument("--feature-set", action="append", default=[], metavar="F1,F2,...",
                    help="`fit`: one more candidate signal set for the calibration (repeatable; chosen by "
                         "cross-validated log loss with the built-in sets)")
    et.add_argument("--calibration-out", default=None,
                    help="`fit`: where to write (default: the config's confidence.calibration, else "
                         "configs/calibration/default.json)")
    et.add_argument("--json", action="store_true")
    et.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from eval import trust_set
    from rag.config import data_dir
    from rag.errors import InputError

    if args.action == "fit" and not args.onto and (args.rechoose or args.refit_answers or args.rescale):
        # before anything loads (the records, the rows, the verifier)
        raise InputError("`eval trust fit --rechoose/--refit-answers/--rescale` needs --onto CALIBRATION.json (the "
                         "calibration to start from)")

    cfg = load_config(args)
    if args.action == "split" and args.ece:
        split = trust_set.add_ece_part(trust_set.load(), data_dir(cfg), args.ece)
        trust_set.write(split)
        print(f"wrote {trust_set.TRUST_SPLIT}: ece part of {len(split['ece']['medquad'])} MedQuAD questions added")
        return 0
    for part, per_page in (("dev", args.dev_medquad), ("test", args.test_medquad), ("ece", args.ece_medquad)):
        if args.action == "split" and per_page:
            split = trust_set.add_page_questions(trust_set.load(), data_dir(cfg), part, per_page, again=args.again)
            trust_set.write(split)
            rounds = trust_set.rounds_of(split, part)
            print(f"wrote {trust_set.TRUST_SPLIT}: {rounds[-1]} MedQuAD questions added to the {part} part in round "
                  f"{len(rounds)} ({len(split[part]['medquad'])} now)")
            return 0
    if args.action == "split" and args.ece_patients:
        split = trust_set.add_ece_patients(trust_set.load(), data_dir(cfg))
        trust_set.write(split)
        print(f"wrote {trust_set.TRUST_SPLIT}: {len(split['ece']['patient'])} record questions added to the ece part")
        return 0
    if args.action == "split":
        split = trust_set.make(data_dir(cfg))
        trust_set.write(split)
        print(f"wrote {trust_set.TRUST_SPLIT}: {split['counts']}; trust index: {len(split['index_medquad_files'])} "
              "MedQuAD files + the demo corpus + the heart-failure records")
        return 0
    if args.action == "build":
        return _build(args, cfg)
    from corpora.heart_failure import read_records
    from corpora.report import LoadReport

    # Read first: a missing or malformed records CSV fails before any model loads.
    records = {r.patient_id: r for r in read_records(data_dir(cfg) / trust_set.HF_CSV,
                                                     LoadReport(fmt="uci-heart-failure"))}
    if args.action == "run":
        return _run_part(args, cfg)
    if args.action == "keep":
        return _keep(args, cfg)
    return _fit_or_report(args, cfg, records)


def _keep(args: argparse.Namespace, cfg: Any) -> int:
    from eval import trust_jobs
    from rag.config import resolve_path
    from rag.errors import InputError

    if not args.to:
        raise InputError("`eval trust keep` needs --to FILE.jsonl (e.g. eval/results/trust-ece.jsonl)")
    out = trust_jobs.keep(cfg, resolve_path(args.output) / f"rows-{args.part}.jsonl",
                          [resolve_path(p) for p in args.labels], args.trust_index, resolve_path(args.to))
    if args.json:
        print_json(out)
        return 0
    print(f"{out['added']} outcomes added, {out['replaced']} replaced in {out['file']}; "
          f"{out['kept_under_fingerprint']} kept under fingerprint {out['fingerprint']}")
    return 0


def _build(args: argparse.Namespace, cfg: Any) -> int:
    from eval import trust_jobs, trust_set
    from rag import Assistant
    from rag.config import data_dir, resolve_path
    from rag.index_jobs import IndexJobs

    sources = trust_set.materialise(trust_set.load(), data_dir(cfg), resolve_path(".cds/trust/medquad"))
    jobs = IndexJobs.of(Assistant(trust_jobs.trust_config(cfg, args.trust_index), progress=not args.quiet))
    manifest = jobs.build(sources)
    print(f"trust index built at {resolve_path(args.trust_index)}: {manifest['counts']}")
    return 0


def _run_part(args: argparse.Namespace, cfg: Any) -> int:
    from eval import trust_jobs
    from rag.config import data_dir, resolve_path

    rows_path = resolve_path(args.output) / f"rows-{args.part}.jsonl"
    rows = trust_jobs.run_part(cfg, args.trust_index, args.part, data_dir(cfg), rows_path, args.floor,
                               args.batch_size, args.limit, args.regenerate_above,
                               resolve_path(args.gate_from) if args.gate_from else None,
                               None if args.quiet else (lambda n: advance(bar(n))),
                               resolve_path(args.replay) if args.replay else None, args.suite, args.resume,
                               resolve_path(args.skip_kept) if args.skip_kept else None, args.ece_half,
                               args.added_only)
    print(f"{len(rows)} {args.part} questions answered or abstained; records in {rows_path}")
    return 0


def _fit_onto(args: argparse.Namespace, cfg: Any, rows: list[dict[str, Any]], records: dict[str, Any],
              floor: float) -> int:
    """`fit --onto C --offset S`: calibration C plus one dev-fitted coefficient per S, everything else as in C."""
    import json

    from eval import trust
    from rag.config import resolve_path
    from rag.errors import InputError

    if not args.offset and not args.rechoose and not args.refit_answers and not args.rescale:
        raise InputError("`eval trust fit --onto` needs --refit-answers, --rescale, --offset SIGNAL (e.g. "
                         "--offset patient_scoped) or --rechoose")
    src = resolve_path(args.onto)
    try:
        calib = json.loads(src.read_text(encoding="utf-8"))
        gate_model, features = calib["gate"], calib["features"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{src} is not a calibration file of `eval trust fit` ({e}); give one with a gate") from e
    settings = trust.settings_from(cfg, floor)
    ece_rows: list[dict[str, Any]] = []
    if args.ece_fit:
        from eval import trust_jobs, trust_set

        ece_rows = [r for r in trust_jobs.prepare_rows(cfg, resolve_path(args.ece_fit),
                                                       [resolve_path(p) for p in args.labels], args.trust_index)
                    if trust_set.ece_half(r["id"]) == "fit"]
        if not ece_rows:
            raise InputError(f"--ece-fit {args.ece_fit}: no record of the ece part's fit half")
    if args.rescale and ece_rows:
        calib = trust.rescale(calib, ece_rows, records, settings["gate"], support_cosine=settings["support_cosine"],
                              support_min=settings["support_min"], options=trust.pipeline_options(cfg))
        calib["rescaled"].update({"onto": str(args.onto), "on": f"ece fit half of {args.ece_fit}"})
    elif args.rescale:
        from eval import trust_set

        extension = set(trust_set.added(trust_set.load(), "dev"))
        if not extension:
            raise InputError("--rescale fits on the dev questions `eval trust split --dev-medquad N` added, and this "
                             "split has none")
        calib = trust.rescale(calib, [r for r in rows if r["id"] in extension], records, settings["gate"],
                              support_cosine=settings["support_cosine"], support_min=settings["support_min"],
                              options=trust.pipeline_options(cfg))
        calib["rescaled"]["onto"] = str(args.onto)
    if args.refit_answers:
        from rag import provenance

        why = provenance.gate_mismatch(calib.get("gate_verifier"), cfg)
        if why:
            raise InputError(f"--onto {src}: {why}; fit a calibration for this gate with `eval trust fit`")
        calib = trust.refit_answers(calib, rows + ece_rows, records, settings["gate"],
                                    support_cosine=settings["support_cosine"],
                                    support_min=settings["support_min"], options=trust.pipeline_options(cfg),
                                    extra_sets=[tuple(fs.split(",")) for fs in args.feature_set])
        calib["refit_answers"] = {"onto": str(args.onto), "answered": calib["fitted_on"]["answered"],
                                  "ece_fit_rows": len(ece_rows)}
    for feature in args.offset:
        if feature in features:
            raise InputError(f"{src} already uses {feature}; --onto adds a signal it does not have")
        calib = trust.fit_offset(calib, rows, records, settings["gate"], feature, gate_model=gate_model,
                                 support_cosine=settings["support_cosine"], support_min=settings["support_min"],
                                 options=trust.pipeline_options(cfg))
    if args.offset:
        calib["offset_fit"]["onto"] = str(args.onto)
    if args.rechoose:
        calib = trust.rechoose(calib, rows, records, floor, trust.pipeline_options(cfg), args.min_ooc_abstain)
    out = resolve_path(_calibration_out(args, cfg))
    trust.write_calibration(calib, out)
    added = f" plus {', '.join(args.offset)} (coefficient {calib['coef'][-1]})" if args.offset else ""
    if args.rescale:
        added += (f", logit rescaled (slope {calib['rescaled']['slope']}, intercept {calib['rescaled']['intercept']}) "
                  f"on {calib['rescaled']['answers']} answers it was not fitted on")
    if args.refit_answers:
        extra = ", the ece fit half's among them" if ece_rows else ""
        added += (f", answer calibration refitted on {calib['fitted_on']['answered']} answers{extra} "
                  f"({', '.join(calib['features'])}; C={calib['C']})")
    point = (f"operating point chosen again on dev: verifier.answerable_min={calib['answerable_min']} "
             f"confidence.abstain_below={calib['abstain_below']} verifier.support_min={calib['support_min']} "
             f"verifier.support_cosine={calib['support_cosine']}" if args.rechoose
             else "gate and thresholds unchanged")
    print(f"calibration written to {out}: {src.name}{added}; {point}")
    return 0


def _calibration_out(args: argparse.Namespace, cfg: Any) -> str:
    """Where `fit` writes: --calibration-out, else the file the config reads (refitting the preset in use)."""
    return str(args.calibration_out or cfg.confidence.calibration or "configs/calibration/default.json")


def _fit_or_report(args: argparse.Namespace, cfg: Any, records: dict[str, Any]) -> int:
    from eval import trust, trust_jobs
    from rag import provenance
    from rag.config import resolve_path
    from rag.errors import InputError

    out = resolve_path(args.output)
    rows_path = out / f"rows-{args.part}.jsonl"
    if not rows_path.exists():
        raise InputError(f"{rows_path} not found; run `python app.py eval trust run --part {args.part}` first")
    rows = trust_jobs.prepare_rows(cfg, rows_path, [resolve_path(p) for p in args.labels], args.trust_index,
                                   lambda line: print(line, file=sys.stderr))
    floor = max(float(r.get("floor", args.floor)) for r in rows)
    if args.action == "fit":
        if args.part != "dev":
            raise InputError("`eval trust fit` fits on dev only; report test with `eval trust report --part test`")
        if args.onto:
            return _fit_onto(args, cfg, rows, records, floor)
        out_file = resolve_path(_calibration_out(args, cfg))
        calib = trust.fit_dev(rows, records, floor, out_file,
                              trust.pipeline_options(cfg), min_ooc_abstain=args.min_ooc_abstain,
                              gate_features=tuple(args.gate_features.split(",")) if args.gate_features
                              else trust.GATE_FEATURES,
                              extra_sets=[tuple(fs.split(",")) for fs in args.feature_set], offsets=args.offset,
                              gate_verifier=provenance.gate_verifier(cfg))
        if args.json:
            print_json(calib)
            return 0
        print(f"calibration written to {out_file}; chosen on dev: "
              f"verifier.answerable_min={calib['answerable_min']} confidence.abstain_below={calib['abstain_below']} "
              f"verifier.support_min={calib['support_min']} verifier.support_cosine={calib['support_cosine']}")
        return 0
    summary = trust.report(rows, trust.settings_from(cfg, floor), records, out, args.part)
    if args.json:
        print_json(summary)
        return 0
    print(trust.markdown(summary))
    print(f"figures and summary-{args.part}.json in {out}")
    return 0

