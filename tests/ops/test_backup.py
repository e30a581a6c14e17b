"""`hitl backup` / `hitl restore` on a state dir without servers: a consistent copy of live SQLite databases,
checked on the way back, never over data without --replace (tests/e2e/test_faults_e2e.py drills it on the stack)."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest
from helpers_domain import make_cfg

from hitl.ops import backup


def _state(cfg) -> Path:
    """A state dir like the stack's: three SQLite databases (one in WAL mode, with a write not yet
    checkpointed), artifacts, and what a backup leaves out."""
    state = cfg.state
    for rel in ("review.db", "prefect/prefect.db", "mlflow/mlflow.db"):
        (state / rel).parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(state / rel) as conn:
            conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
            conn.execute("INSERT INTO t VALUES ('db', ?)", (rel,))
    (state / "mlflow" / "artifacts" / "1" / "run").mkdir(parents=True)
    (state / "mlflow" / "artifacts" / "1" / "run" / "records.parquet").write_bytes(b"PAR1 data")
    for skipped in ("logs/mlflow.log", "pids/mlflow.pid", "work/trainer/run-x/checkpoint-2/optimizer.pt"):
        (state / skipped).parent.mkdir(parents=True, exist_ok=True)
        (state / skipped).write_text("x")
    return state


def _rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT k, v FROM t ORDER BY k").fetchall()


def test_backup_restores_a_consistent_copy_into_a_fresh_state_dir(tmp_path):
    cfg = make_cfg(tmp_path / "a")
    state = _state(cfg)
    live = sqlite3.connect(state / "review.db")  # a writer holds the store open in WAL mode
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("INSERT INTO t VALUES ('label', 'card_lost')")
    live.commit()
    assert (state / "review.db-wal").exists()

    s = backup.backup(cfg, tmp_path / "b.tar.gz")
    live.close()
    assert sorted(s.databases) == ["mlflow/mlflow.db", "prefect/prefect.db", "review.db"] and s.files == 1
    with tarfile.open(s.archive) as tar:
        names = tar.getnames()
    assert not any(n.startswith(("state/logs", "state/pids", "state/work")) or n.endswith("-wal") for n in names)

    fresh = make_cfg(tmp_path / "clone")
    manifest = backup.restore(fresh, s.archive)
    assert manifest["state_dir"] == str(state) and len(manifest["databases"]) == 3
    assert _rows(fresh.state / "review.db") == [("db", "review.db"), ("label", "card_lost")]  # the WAL write too
    assert _rows(fresh.state / "mlflow" / "mlflow.db") == [("db", "mlflow/mlflow.db")]
    assert (fresh.state / "mlflow/artifacts/1/run/records.parquet").read_bytes() == b"PAR1 data"


def test_restore_never_overwrites_data_unless_told_and_keeps_it(tmp_path):
    cfg = make_cfg(tmp_path)
    _state(cfg)
    s = backup.backup(cfg, tmp_path / "b.tar.gz")
    with pytest.raises(backup.BackupError, match="already holds data.*--replace"):
        backup.restore(cfg, s.archive)
    (cfg.state / "review.db").write_bytes(b"written after the backup")
    backup.restore(cfg, s.archive, replace=True)
    (aside,) = cfg.state.parent.glob("state.replaced-*")
    assert (aside / "review.db").read_bytes() == b"written after the backup"
    assert _rows(cfg.state / "review.db") == [("db", "review.db")]


def test_a_damaged_archive_is_refused_and_changes_nothing(tmp_path):
    cfg = make_cfg(tmp_path / "a")
    _state(cfg)
    s = backup.backup(cfg, tmp_path / "b.tar.gz")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(s.archive) as src, tarfile.open(bad, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "state/review.db":
                data = data[:-1] + bytes([data[-1] ^ 1])
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    fresh = make_cfg(tmp_path / "clone")
    with pytest.raises(backup.BackupError, match="review.db .* does not match its manifest"):
        backup.restore(fresh, bad)
    assert not fresh.state.exists()
    with pytest.raises(backup.BackupError, match="not a hitl backup"):
        with tarfile.open(bad, "w:gz") as dst:
            raw = json.dumps({"format": "other"}).encode()
            info = tarfile.TarInfo(backup.MANIFEST)
            info.size = len(raw)
            dst.addfile(info, io.BytesIO(raw))
        backup.restore(fresh, bad)
