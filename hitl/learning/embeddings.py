"""Frozen sentence embeddings of the base encoder (mean pooling, L2-normalised), with an on-disk cache.

Selection looks for novelty and disagreement here, not in the fine-tuned model's space: a cohort the
fine-tuned model is confidently wrong about sits inside a launch class there, but stands apart in the
frozen encoder's space. The frozen-embedding + logistic-regression anchor uses the same vectors.

With an ONNX engine (`model.engine`), the encoder is exported once to `<cache_dir>/onnx-<model>/` (checked
against torch on the first texts it encodes, `hitl.learning.onnx_engine`) and ONNX Runtime computes the vectors;
int8 vectors are cached apart from fp32/torch ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class FrozenEncoder:
    """`encode(texts)` -> (n, dim) float32 rows; vectors already computed are read from `cache_dir`."""

    def __init__(self, model_path: Path, cache_dir: Path | None = None, batch_size: int = 64, max_length: int = 64,
                 engine: str = "torch"):
        from hitl.learning.onnx_engine import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
        self.model_path, self.cache_dir = Path(model_path), cache_dir
        self.batch_size, self.max_length, self.engine = batch_size, max_length, engine
        self._model = self._tokenizer = self._onnx = None
        self._cache: dict[str, np.ndarray] = {}
        self._dirty = False
        if cache_dir is not None:
            self._read_cache()

    @property
    def _cache_file(self) -> Path:
        assert self.cache_dir is not None
        int8 = "-int8" if self.engine == "onnx-int8" else ""  # fp32 ONNX matches torch to 1e-4: one cache
        return self.cache_dir / f"embeddings-{self.model_path.name}-{self.max_length}{int8}.parquet"

    @property
    def serving_engine(self) -> str:
        """What computes new vectors: torch, onnx or onnx-int8 (known once a vector was computed)."""
        return self._onnx.name if self._onnx is not None else "torch"

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

    def _load(self, probe: list[str]) -> None:
        from transformers import AutoModel, AutoTokenizer

        from hitl.learning.modeling import _quiet_transformers

        _quiet_transformers()
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        if self.engine != "torch" and self._onnx is None:
            self._onnx = self._onnx_engine(probe)
        if self._onnx is None and self._model is None:
            self._model = AutoModel.from_pretrained(self.model_path).eval()

    def _onnx_engine(self, probe: list[str]):
        """The exported encoder from the cache, or exported now (checked on `probe`) and cached."""
        from transformers import AutoModel

        from hitl.learning import onnx_engine

        if self.cache_dir is not None:
            folder = self.cache_dir / f"onnx-{self.model_path.name}"
            if onnx_engine.read_meta(folder) is None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=self.cache_dir))
                try:
                    self._export(AutoModel, tmp, probe)
                    with contextlib.suppress(OSError):  # atomic; another process may have won the race
                        os.rename(tmp, folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            return onnx_engine.load_engine(folder, self.engine, f"frozen encoder {self.model_path.name}")
        with tempfile.TemporaryDirectory(prefix="hitl-onnx-") as tmp:
            self._export(AutoModel, Path(tmp), probe)
            return onnx_engine.load_engine(Path(tmp), self.engine, f"frozen encoder {self.model_path.name}")

    def _export(self, auto_model, folder: Path, probe: list[str]) -> None:
        from hitl.learning import onnx_engine

        logging.getLogger("hitl.embeddings").info("Exporting the frozen encoder %s to ONNX", self.model_path.name)
        onnx_engine.export_encoder(auto_model.from_pretrained(self.model_path), self._tokenizer, folder, probe,
                                   self.batch_size, self.max_length, int8=True,
                                   what=f"frozen encoder {self.model_path.name}")

    def encode(self, texts: list[str]) -> np.ndarray:
        from hitl.learning.modeling import run_batched
        from hitl.learning.network import mean_pool

        keys = [text_key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            first = dict(zip(keys, texts, strict=True))
            todo = [first[k] for k in missing]
            self._load(todo)
            if self._onnx is not None:
                vecs = self._onnx.run(self._tokenizer, todo, self.batch_size, self.max_length)
            else:
                def forward(enc: dict):
                    return mean_pool(self._model(**enc).last_hidden_state, enc["attention_mask"])

                vecs = run_batched(self._tokenizer, todo, forward, self.batch_size, self.max_length)
            self._cache.update(zip(missing, vecs, strict=True))
            self._dirty = True
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[k] for k in keys])
