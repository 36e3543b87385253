"""`train embedder` on the real bundled encoder, a few steps on written triplets: it writes a model folder the
index can use (its id and spec), resumes from its checkpoint, and the tuned vectors differ from the base's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finetune.embedder_data import Triplet, write

CONDITIONS = [("asthma", "the airways narrow and swell", "inhaled corticosteroids"),
              ("gout", "uric acid crystals form in a joint", "colchicine and allopurinol"),
              ("anemia", "there are too few red blood cells", "iron supplements"),
              ("migraine", "recurrent throbbing headaches occur", "triptans"),
              ("eczema", "the skin becomes itchy and inflamed", "moisturisers and steroid creams"),
              ("shingles", "the chickenpox virus reactivates", "antiviral medicines")]


def triplets() -> list[Triplet]:
    out = []
    for i, (name, what, treat) in enumerate(CONDITIONS):
        other = CONDITIONS[(i + 1) % len(CONDITIONS)]
        out.append(Triplet(f"what helps with {name}?", f"{name.title()} — Treatment\n{name} is treated with {treat}.",
                           f"{other[0].title()} — Treatment\n{other[0]} is treated with {other[2]}.",
                           f"doc-{i}-t", "sibling", "medquad"))
        out.append(Triplet(f"what is {name}?", f"{name.title()} — Information\nIn {name}, {what}.",
                           f"{name.title()} — Treatment\n{name} is treated with {treat}.", f"doc-{i}-i", "sibling",
                           "medquad"))
    return out


def test_train_resume_and_use_as_the_embedder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from finetune.embedder import SPEC_FILE, EmbedderTrainOptions, train
    from rag.config import load_config, resolve_path
    from rag.embed import load_embedder
    from rag.errors import ModelNotAvailableError
    from rag.models import resolve

    try:
        base = resolve(load_config().embedder.model, resolve_path(load_config().models.cache_dir))
    except ModelNotAvailableError as e:
        pytest.skip(f"{e} (`make test` fetches it)")
    rows = triplets()
    data = tmp_path / "data"
    write({"train": rows, "heldout": rows[:4]}, {"counts": {"train": len(rows)}}, data)
    run, out = tmp_path / "run", tmp_path / "tuned"
    opts = EmbedderTrainOptions(batch_size=4, max_steps=2, save_steps=1, max_minutes=None, heldout_queries=4)
    card = train(data, base.path, base.model_id, out, run, opts, "tiny")
    assert card["steps_done"] == 2 and (run / "checkpoint-2").is_dir()
    assert json.loads((run / "elapsed.json").read_text())["step"] == 2
    # Resumed: two more steps from checkpoint-2, not four from scratch.
    caplog.set_level(logging.INFO, logger="finetune.embedder")
    card = train(data, base.path, base.model_id, out, run, EmbedderTrainOptions(
        batch_size=4, max_steps=4, save_steps=1, max_minutes=None, heldout_queries=4), "tiny")
    assert card["steps_done"] == 4 and (run / "checkpoint-4").is_dir()
    assert any("resuming from" in r.getMessage() and "checkpoint-2" in r.getMessage() for r in caplog.records)
    assert card["model_id"].startswith("cds/tiny@") and (out / SPEC_FILE).is_file()
    assert "Held-out pages" in (out / "README.md").read_text()

    emb = load_embedder(str(out), tmp_path)
    assert emb.model_id == card["model_id"]  # what the index manifest records
    base_emb = load_embedder(base.ref, resolve_path(load_config().models.cache_dir))
    q = "what helps with gout?"
    v, b = emb.encode_queries([q])[0], base_emb.encode_queries([q])[0]
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
    assert float(v @ b) < 0.99999  # the weights moved
