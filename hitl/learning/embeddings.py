"""Frozen sentence embeddings of the base encoder (mean pooling, L2-normalised), with an on-disk cache.

Selection looks for novelty and disagreement here, not in the fine-tuned model's space: a cohort the
fine-tuned model is confidently wrong about sits inside a launch class there, but stands apart in the
frozen encoder's space. The frozen-embedding + logistic-regression anchor uses the same vectors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class FrozenEncoder:
    """`encode(texts)` -> (n, dim) float32 rows; vectors already computed are read from `cache_dir`."""

    def __init__(self, model_path: Path, cache_dir: Path | None = None, batch_size: int = 64, max_length: int = 64):
        self.model_path, self.cache_dir = Path(model_path), cache_dir
        self.batch_size, self.max_length = batch_size, max_length
        self._model = self._tokenizer = None
        self._cache: dict[str, np.ndarray] = {}
        self._dirty = False
        if cache_dir is not None:
            self._read_cache()

    @property
    def _cache_file(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"embeddings-{self.model_path.name}-{self.max_length}.parquet"

    def _read_cache(self) -> None:
        if self._cache_file.exists():
            df = pd.read_parquet(self._cache_file)
            self._cache = dict(zip(df["key"], np.stack(df["vector"].to_numpy()).astype(np.float32), strict=True))

    def save(self) -> None:
        """Persist new vectors (atomic replace)."""
        if self.cache_dir is None or not self._dirty:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file.with_suffix(".tmp")
        pd.DataFrame({"key": list(self._cache), "vector": [v.tolist() for v in self._cache.values()]}).to_parquet(tmp)
        tmp.replace(self._cache_file)
        self._dirty = False

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            from hitl.learning.modeling import _quiet_transformers

            _quiet_transformers()
            self._model = AutoModel.from_pretrained(self.model_path).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)

    def encode(self, texts: list[str]) -> np.ndarray:
        from hitl.learning.modeling import run_batched
        from hitl.learning.network import mean_pool

        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            self._load()
            first = dict(zip(keys, texts, strict=True))
            todo = [first[k] for k in missing]

            def forward(enc: dict):
                return mean_pool(self._model(**enc).last_hidden_state, enc["attention_mask"])

            vecs = run_batched(self._tokenizer, todo, forward, self.batch_size, self.max_length)
            self._cache.update(zip(missing, vecs, strict=True))
            self._dirty = True
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])
