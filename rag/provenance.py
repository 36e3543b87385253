"""What a fitted file was fitted with, so that it is not used with another model.

A calibration's gate model (``confidence.calibration``) maps the answerability *logit* of one verifier adapter
to P(the sources answer). Another adapter's logits live on another scale: the version-2 MiniLM gate's
coefficients applied to the mpnet answerability adapter's logits (or the reverse) give probabilities that mean
nothing, silently. ``eval trust fit`` therefore records the gate adapter's content digest in the file, and the
assistant refuses a calibration whose recorded adapter is not the one the config gates with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def _file_digest(path: Path) -> str:
    """sha256 (16 hex) over a file's name and contents, read in blocks."""
    h = hashlib.sha256(path.name.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def gate_adapter(config: Any) -> str:
    """The adapter whose answerability logit the gate reads: ``verifier.answerability_adapter``, else ``adapter``."""
    return str(config.verifier.answerability_adapter or config.verifier.adapter)


def adapter_digest(path: Path) -> str:
    """sha256 (16 hex) over an adapter's weights and adapter config; '' when absent. The card (README, training
    card, losses) is documentation: editing it must not invalidate a calibration or kept outcomes."""
    if not path.exists():
        return ""
    weights = ([p for p in sorted(path.glob("*")) if p.suffix in (".safetensors", ".bin", ".gguf")
                or p.name == "adapter_config.json"] if path.is_dir() else [path])
    h = hashlib.sha256()
    for p in weights:
        h.update(_file_digest(p).encode())
    return h.hexdigest()[:16]


def gate_verifier(config: Any) -> dict[str, str]:
    """What ``eval trust fit`` records under ``gate_verifier`` in a calibration file."""
    from rag.config import resolve_path

    adapter = gate_adapter(config)
    return {"adapter": adapter, "adapter_digest": adapter_digest(resolve_path(adapter)),
            "model": str(config.verifier.answerability_model or config.verifier.model)}


def gate_mismatch(recorded: dict[str, Any] | None, config: Any) -> str | None:
    """Why a calibration fitted with ``recorded`` (its ``gate_verifier``) must not gate under ``config``; None when
    it may (also when the file predates the record, or the verifier is off and no gate is read)."""
    if not recorded or not config.verifier.enabled:
        return None
    now = gate_verifier(config)
    if recorded.get("adapter_digest") == now["adapter_digest"]:
        return None
    return (f"its gate was fitted on the answerability logits of {recorded.get('adapter')} "
            f"(on {recorded.get('model')}), and this config gates with {now['adapter']} (on {now['model']})")
