"""Our peft LoRA adapter as a GGUF LoRA that llama.cpp loads beside the quantised base model.

llama.cpp reads an adapter GGUF with ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha`` and, for every adapted weight, two tensors named after the base tensor:
``blk.N.attn_q.weight.lora_a`` (peft's ``lora_A``, shape r x in) and ``...lora_b`` (``lora_B``,
out x r); it scales B @ A by alpha / r like peft (the conventions of llama.cpp's
``convert_lora_to_gguf.py``). Names are mapped with the ``gguf`` package's own tensor-name
tables, so any architecture it knows works. Llama-family q/k weights are stored row-permuted
in GGUF (rotary layout), so their ``lora_b`` rows get the same permutation.

The GGUF records the sha256 of the safetensors it came from (``cds.adapter.source_sha256``), so
a stale conversion is refused instead of silently answering with an older adapter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InputError, ModelNotAvailableError

SOURCE_KEY = "cds.adapter.source_sha256"
DEFAULT_NAME = "adapter_model.gguf"
# Architectures whose q/k weights convert_hf_to_gguf.py permutes (LlamaModel.modify_tensors).
_PERMUTED_QK = {"llama"}


@dataclass(frozen=True)
class LoraGGUF:
    path: Path
    arch: str
    alpha: float
    rank: int
    tensors: int
    source_sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_path(adapter_dir: Path) -> Path:
    return adapter_dir / DEFAULT_NAME


def _adapter_files(adapter_dir: Path) -> tuple[dict[str, Any], Path]:
    cfg_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise InputError(f"{adapter_dir} is not a peft LoRA folder (needs adapter_config.json and "
                         "adapter_model.safetensors); pass the adapter folder")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputError(f"{cfg_path} is not valid JSON ({e}); re-export the adapter") from None
    if cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("use_rslora"):
        raise InputError(f"{adapter_dir}: only plain LoRA adapters convert to GGUF (not DoRA or rsLoRA)")
    return cfg, weights


def _arch(base_config: dict[str, Any]) -> Any:
    import gguf

    model_type = str(base_config.get("model_type", ""))
    for arch, name in gguf.MODEL_ARCH_NAMES.items():
        if name == model_type:
            return arch
    raise InputError(f"the base model type '{model_type}' has no GGUF architecture in the gguf package; "
                     "convert this adapter with llama.cpp's convert_lora_to_gguf.py")


def _permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    # Same as convert_hf_to_gguf.py LlamaModel.permute, on the output rows only.
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def convert(adapter_dir: Path, base_config: dict[str, Any], out: Path | None = None,
            dtype: str = "f32") -> LoraGGUF:
    """Write ``adapter_dir``'s LoRA as a GGUF LoRA (``out``, default ``adapter_dir/adapter_model.gguf``).

    ``base_config`` is the base model's HF ``config.json`` (architecture, layers, heads).
    Long: one pass over the adapter's tensors, naming, permuting and writing each; split up, the GGUF
    writer, the name table and the head counts would travel through every piece.
    """
    import gguf
    import torch
    from safetensors.torch import load_file

    cfg, weights = _adapter_files(adapter_dir)
    arch = _arch(base_config)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    n_blocks = int(base_config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(arch, n_blocks)
    alpha, rank = float(cfg["lora_alpha"]), int(cfg["r"])
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise InputError(f"{adapter_dir}: per-module rank/alpha patterns are not supported by the GGUF LoRA format")
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]

    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(weights)).items():
        if ".lora_A." not in key and ".lora_B." not in key:
            raise InputError(f"{adapter_dir}: tensor {key} is not a LoRA A/B matrix (modules_to_save or new "
                             "embeddings cannot go into a GGUF LoRA); retrain without them")
        side = "a" if ".lora_A." in key else "b"
        base = key.replace("base_model.model.", "", 1).replace(f".lora_{side.upper()}.weight", ".weight")
        gguf_name = names.get_name(base, try_suffixes=(".weight",))
        if gguf_name is None:
            raise InputError(f"{adapter_dir}: no GGUF tensor for {base} in architecture {arch_name}")
        pairs.setdefault(gguf_name, {})[side] = t
    n_head, n_head_kv = int(base_config["num_attention_heads"]), int(base_config.get("num_key_value_heads") or
                                                                     base_config["num_attention_heads"])

    out = out or default_path(adapter_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    source = _sha256(weights)
    try:
        w = gguf.GGUFWriter(str(tmp), arch_name)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        w.add_string(SOURCE_KEY, source)
        w.add_string("general.name", adapter_dir.name)
        for name in sorted(pairs):
            ab = pairs[name]
            if set(ab) != {"a", "b"}:
                raise InputError(f"{adapter_dir}: {name} has lora_{''.join(ab)} but not both A and B")
            a = ab["a"].float().numpy()
            b = ab["b"].float().numpy()
            if arch_name in _PERMUTED_QK and name.endswith(("attn_q.weight", "attn_k.weight")):
                b = _permute_rows(b, n_head if name.endswith("attn_q.weight") else n_head_kv)
            # numpy shape (r, in) is ggml ne = [in, r]: exactly what llama.cpp's lora_a expects.
            w.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np_dtype))
            w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np_dtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return LoraGGUF(out, arch_name, alpha, rank, 2 * len(pairs), source)


def checked(adapter_dir: Path, gguf_path: Path | None = None) -> Path:
    """The adapter's GGUF LoRA, refused when missing or converted from other weights."""
    import gguf

    path = gguf_path or default_path(adapter_dir)
    hint = f"run `python app.py models convert-lora {adapter_dir}`"
    if not path.is_file():
        raise ModelNotAvailableError(f"the llamacpp backend needs the adapter as a GGUF LoRA ({path}); {hint}")
    field = gguf.GGUFReader(str(path)).fields.get(SOURCE_KEY)
    weights = adapter_dir / "adapter_model.safetensors"
    if field is not None and weights.is_file() and str(field.contents()) != _sha256(weights):
        raise ModelNotAvailableError(f"{path} was converted from other adapter weights than {weights}; {hint}")
    return path


def convert_adapter(cfg: Any, adapter: str | None = None, out: str | None = None) -> LoraGGUF:
    """``app.py models convert-lora``: the configured (or given) adapter, against the generator's base config.

    The base model's ``config.json`` comes from ``generator.model`` when it is available here, else
    from the adapter's ``base_config.json`` if one was saved beside it.
    """
    from rag.config import resolve_path
    from rag.models import resolve

    ref = adapter or cfg.generator.adapter
    if not ref:
        raise InputError("no adapter given and generator.adapter is not set; pass the adapter folder")
    adapter_dir = resolve_path(ref)
    _adapter_files(adapter_dir)
    candidates = [adapter_dir / "base_config.json"]
    with contextlib.suppress(ModelNotAvailableError, InputError):
        candidates.insert(0, resolve(cfg.generator.model, resolve_path(cfg.models.cache_dir)).path / "config.json")
    base = next((c for c in candidates if c.is_file()), None)
    if base is None:
        raise ModelNotAvailableError(f"the base model's config.json is needed to name the tensors: fetch "
                                     f"{cfg.generator.model} (`python app.py models fetch`) or put it in {adapter_dir}"
                                     "/base_config.json")
    return convert(adapter_dir, json.loads(base.read_text(encoding="utf-8")), resolve_path(out) if out else None)
