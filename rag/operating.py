"""An operating point (answerability gate, confidence threshold) chosen for one index's own documents.

The product's gate and threshold (``verifier.answerable_min``, ``confidence.abstain_below``) are chosen on
the trust dev split, which is mostly the trust index (MedQuAD pages). On the demo index the same point
abstained on half the dev clinician questions: the gate's scale depends on the documents it reads. A point
chosen on one index's own dev questions (``python -m eval.trust_operating``) is written to a JSON file that
names what it was chosen with: every document of that index with its content hash, and the calibration
file's sha256. The assistant uses it only while the index it answers from holds exactly those documents and
the calibration is that file; otherwise the general point applies (the stricter side: it was chosen for
>= 97% out-of-corpus abstention on any index), and the mismatch is logged once with what to run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import ConfigError


@dataclass(frozen=True)
class OperatingPoint:
    """A gate and a threshold, and what they were chosen with."""

    answerable_min: float
    abstain_below: float
    documents: dict[str, str]  # doc id -> content hash, as the index manifest lists them
    calibration_sha256: str
    path: Path

    def mismatch(self, manifest: dict[str, Any], calibration: Path | None) -> str | None:
        """Why this point does not apply to the index version of ``manifest`` answering with ``calibration``
        (None: it applies)."""
        if calibration is None or not calibration.is_file():
            return "no confidence.calibration file (the point was chosen with one)"
        if sha256_of(calibration) != self.calibration_sha256:
            return f"confidence.calibration {calibration.name} is not the file it was chosen with"
        docs = {k: v.get("hash") for k, v in manifest.get("documents", {}).items()}
        new = sorted(set(docs) - set(self.documents))
        gone = sorted(set(self.documents) - set(docs))
        changed = sorted(k for k in docs if k in self.documents and docs[k] != self.documents[k])
        if new or gone or changed:
            first = (new or gone or changed)[0]
            return (f"the index differs from the one it was chosen on: {len(new)} document(s) added, {len(gone)} "
                    f"removed, {len(changed)} changed (e.g. {first})")
        return None

    def mismatch_for(self, manifest: dict[str, Any], config: Any) -> str | None:
        """:meth:`mismatch` with the calibration ``config`` (an :class:`rag.config.AppConfig`) answers with: its
        ``confidence.calibration`` file when ``calibrated_answers`` is on, else none."""
        from rag.config import resolve_path

        calib = config.confidence.calibration if config.confidence.calibrated_answers else None
        return self.mismatch(manifest, resolve_path(calib) if calib else None)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path) -> OperatingPoint:
    """Read an operating-point file; a missing or malformed one is a :class:`ConfigError` saying what to do."""
    fix = ("choose it again with `python -m eval.trust_operating --rows ... --out FILE` or set "
           "index.operating_point=null")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"index.operating_point {path} does not exist; {fix}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"index.operating_point {path} is not readable JSON ({type(e).__name__}); {fix}") from None
    try:
        point = OperatingPoint(float(data["answerable_min"]), float(data["abstain_below"]),
                               {str(k): str(v) for k, v in dict(data["documents"]).items()},
                               str(data["calibration_sha256"]), path)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"index.operating_point {path} lacks a valid {e}; {fix}") from None
    if not (0.0 <= point.answerable_min <= 1.0 and 0.0 <= point.abstain_below <= 1.0) or not point.documents:
        raise ConfigError(f"index.operating_point {path}: gate and threshold must be in [0, 1] and documents listed; "
                          f"{fix}")
    return point
