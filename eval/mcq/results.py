"""What a run of one condition produces: shared by the runner that makes it and the report that writes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ConditionResult:
    name: str
    folder: Path
    summary: dict[str, Any]
    correct: np.ndarray
    ids: list[str]
