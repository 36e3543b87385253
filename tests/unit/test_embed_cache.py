import numpy as np

from rag.embed_cache import EmbeddingCache, clean_cache_leftovers, fingerprint, text_key

FACTS = {"model_id": "m", "dim": 4, "normalize": True}


def test_round_trip_across_instances_and_embedders(tmp_path):
    c = EmbeddingCache(tmp_path, FACTS)
    keys = [text_key("a"), text_key("b")]
    c.put(keys, np.eye(2, 4, dtype=np.float32))
    assert len(c) == 2
    again = EmbeddingCache(tmp_path, FACTS).get([*keys, text_key("c")])
    assert set(again) == set(keys)
    np.testing.assert_array_equal(again[keys[1]], np.eye(2, 4, dtype=np.float32)[1])
    # Another embedder (any fact differs) has its own cache.
    assert fingerprint({**FACTS, "normalize": False}) != fingerprint(FACTS)
    assert EmbeddingCache(tmp_path, {**FACTS, "normalize": False}).get(keys) == {}


def test_leftovers_and_compaction(tmp_path):
    c = EmbeddingCache(tmp_path, FACTS)
    for i in range(5):
        c.put([text_key(str(i))], np.full((1, 4), i, np.float32))
    (c.dir / ".tmp-dead.npz").write_bytes(b"half")
    assert clean_cache_leftovers(tmp_path) == 1
    c.compact([text_key("3"), text_key("4"), text_key("absent")], max_segments=2)
    assert len(list(c.dir.glob("seg-*.npz"))) == 1
    got = EmbeddingCache(tmp_path, FACTS).get([text_key(str(i)) for i in range(5)])
    assert sorted(float(v[0]) for v in got.values()) == [3.0, 4.0]
