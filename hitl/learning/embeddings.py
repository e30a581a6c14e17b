"""Frozen sentence embeddings of the base encoder (mean pooling, L2-normalised), with an on-disk cache.

Selection looks for novelty and disagreement here, not in the fine-tuned model's space: a cohort the
fine-tuned model is confidently wrong about sits inside a launch class there, but stands apart in the
frozen encoder's space. The frozen-embedding + logistic-regression anchor uses the same vectors.

Vectors computed are kept in `<cache_dir>/embeddings-....sqlite`, looked up and added a batch at a time (never
read whole, so a window of any size costs its own vectors, not the cache's), and deleted `CACHE_DAYS` after
they were computed: they are derived from production text, and the cache is no archive.

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
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE_DAYS = 30  # a vector is computed again this long after it was computed
LOOKUP_KEYS = 900  # keys a lookup asks for at once (below SQLite's bound on parameters)


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


class VectorCache:
    """text key -> float32 vector in a SQLite file, shared by processes (WAL; writers wait for each other)."""

    def __init__(self, path: Path, days: float = CACHE_DAYS):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=120, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
                         "added REAL NOT NULL)")
        self._db.execute("DELETE FROM vectors WHERE added < ?", (time.time() - days * 86400,))

    def get(self, keys: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), LOOKUP_KEYS):
            chunk = keys[start:start + LOOKUP_KEYS]
            rows = self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk)
            out.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return out

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        now = time.time()
        with contextlib.closing(self._db.cursor()) as cur:
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                            ((k, np.asarray(v, dtype=np.float32).tobytes(), now) for k, v in vectors.items()))
            cur.execute("COMMIT")

    def clear(self) -> None:
        self._db.execute("DELETE FROM vectors")


class FrozenEncoder:
    """`encode(texts)` -> (n, dim) float32 rows; vectors already computed are read from `cache_dir` (without one,
    kept in memory for the encoder's life)."""

    def __init__(self, model_path: Path, cache_dir: Path | None = None, batch_size: int = 64, max_length: int = 64,
                 engine: str = "torch"):
        from hitl.learning.onnx_engine import ENGINES

        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
        self.model_path, self.cache_dir = Path(model_path), cache_dir
        self.batch_size, self.max_length, self.engine = batch_size, max_length, engine
        self._model = self._tokenizer = self._onnx = None
        self._cache: dict[str, np.ndarray] = {}  # without a cache_dir
        self._store = VectorCache(self._cache_file) if cache_dir is not None else None
        for old in Path(cache_dir).glob("embeddings-*.parquet") if cache_dir is not None else ():
            old.unlink(missing_ok=True)  # the cache of earlier versions, read whole at every start

    @property
    def _cache_file(self) -> Path:
        assert self.cache_dir is not None
        int8 = "-int8" if self.engine == "onnx-int8" else ""  # fp32 ONNX matches torch to 1e-4: one cache
        return self.cache_dir / f"embeddings-{self.model_path.name}-{self.max_length}{int8}.sqlite"

    @property
    def serving_engine(self) -> str:
        """What computes new vectors: torch, onnx or onnx-int8 (known once a vector was computed)."""
        return self._onnx.name if self._onnx is not None else "torch"

    def save(self) -> None:
        """Nothing left to do: `encode` stores the vectors it computes as it goes (kept for callers)."""

    def clear_cache(self) -> None:
        """Forget every vector computed (benchmarks time the computation)."""
        self._cache.clear()
        if self._store is not None:
            self._store.clear()

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
        unique = list(dict.fromkeys(keys))
        found = self._store.get(unique) if self._store is not None else \
            {k: self._cache[k] for k in unique if k in self._cache}
        missing = [k for k in unique if k not in found]
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
            computed = dict(zip(missing, np.asarray(vecs, dtype=np.float32), strict=True))
            found.update(computed)
            if self._store is not None:
                self._store.put(computed)
            else:
                self._cache.update(computed)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys])
