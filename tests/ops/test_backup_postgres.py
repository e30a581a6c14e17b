"""`hitl backup` / `hitl restore` of databases on PostgreSQL (pg_dump custom format, pg_restore), no servers
of the stack: each dump checked on the way back, restored all or none, never over data without --replace,
and a clear refusal when the client tools are missing or too old (tests/e2e/test_deployed.py drills
it on the stack). Skipped where no PostgreSQL answers at HITL_TEST_DATABASE_URL (an error under CI)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from e2e_helpers import TEST_DATABASE_URL, postgres_or_none
from helpers_domain import make_cfg
from sqlalchemy import create_engine, text

from hitl.ops import backup, databases, pgdump

PROJECT = "pgbackup"
pytestmark = pytest.mark.slow(reason="creates, dumps and restores PostgreSQL databases: seconds per CREATE DATABASE")


@pytest.fixture
def pg_cfg(tmp_path):
    url = postgres_or_none(PROJECT)
    if url is None:
        pytest.skip("no PostgreSQL server")
    cfg = make_cfg(tmp_path / "a", project=PROJECT, stack={"database_url": url})
    databases.ensure(cfg)
    for role, db in pgdump.databases(cfg).items():
        _sql(db, "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)", f"INSERT INTO t VALUES ('role', '{role}')")
    (cfg.state / "mlflow" / "artifacts").mkdir(parents=True)
    (cfg.state / "mlflow" / "artifacts" / "model.bin").write_bytes(b"weights")
    yield cfg
    admin = pgdump.databases(cfg)["prefect"].rsplit("/", 1)[0] + "/postgres"
    for name in _server_dbs():
        if name.startswith(f"{PROJECT}_"):  # what a test moved aside, or left behind when it failed
            _sql(admin, f'DROP DATABASE "{name}" WITH (FORCE)')


def _sql(url: str, *statements: str) -> list[tuple]:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            out = [conn.execute(text(s)) for s in statements]
            return [tuple(r) for r in out[-1]] if out[-1].returns_rows else []
    finally:
        engine.dispose()


def _rows(cfg) -> dict[str, list[tuple]]:
    return {role: _sql(url, "SELECT k, v FROM t ORDER BY k") for role, url in pgdump.databases(cfg).items()}


def _server_dbs() -> set[str]:
    url = f"{TEST_DATABASE_URL.replace('postgresql://', 'postgresql+psycopg2://')}/postgres"
    return {r[0] for r in _sql(url, "SELECT datname FROM pg_database")}


def test_dumps_restore_into_a_clean_server_and_replace_only_when_told(pg_cfg, tmp_path):
    before = _rows(pg_cfg)
    s = backup.backup(pg_cfg, tmp_path / "b.tar.gz")
    assert sorted(s.databases) == [f"postgres:{PROJECT}_{r}" for r in ("mlflow", "prefect", "review")]
    with tarfile.open(s.archive) as tar:
        manifest = json.load(tar.extractfile(backup.MANIFEST))
        assert {e["path"] for e in manifest["postgres"]} <= set(tar.getnames())
    assert manifest["not_included"] == [] and all(len(e["sha256"]) == 64 for e in manifest["postgres"])

    _sql(pgdump.databases(pg_cfg)["review"], "INSERT INTO t VALUES ('label', 'written after the backup')")
    fresh = make_cfg(tmp_path / "clone", project=PROJECT, stack={"database_url": pg_cfg.stack.database_url})
    with pytest.raises(backup.BackupError, match=f"{PROJECT}_review.* already hold data.*--replace"):
        backup.restore(fresh, s.archive)
    assert not fresh.state.exists() and not [d for d in _server_dbs() if "_restoring_" in d]

    manifest = backup.restore(fresh, s.archive, replace=True)
    assert _rows(fresh) == before
    assert (fresh.state / "mlflow" / "artifacts" / "model.bin").read_bytes() == b"weights"
    assert len(manifest["replaced_databases"]) == 3
    (aside,) = [d for d in manifest["replaced_databases"] if d.startswith(f"{PROJECT}_review_replaced_")]
    url = pgdump.databases(pg_cfg)["review"].rsplit("/", 1)[0] + f"/{aside}"
    assert ("label", "written after the backup") in _sql(url, "SELECT k, v FROM t")  # kept, renamed

    postgres_or_none(PROJECT)  # the server lost: every database gone
    other = make_cfg(tmp_path / "again", project=PROJECT, stack={"database_url": pg_cfg.stack.database_url})
    backup.restore(other, s.archive)
    assert _rows(other) == before


def _rewrite(archive: Path, out: Path, edit) -> Path:
    """A copy of `archive` with `edit(name, bytes) -> bytes` applied to each member."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = edit(m.name, src.extractfile(m).read()) if m.isfile() else None
            if data is not None:
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    return out


def test_a_damaged_dump_or_too_old_tools_change_nothing(pg_cfg, tmp_path):
    s = backup.backup(pg_cfg, tmp_path / "b.tar.gz")
    postgres_or_none(PROJECT)
    fresh = make_cfg(tmp_path / "clone", project=PROJECT, stack={"database_url": pg_cfg.stack.database_url})

    def flip(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if name == "postgres/review.dump" else data

    with pytest.raises(backup.BackupError, match="postgres/review.dump .* does not match its manifest"):
        backup.restore(fresh, _rewrite(s.archive, tmp_path / "bad.tar.gz", flip))

    def newer(key, value):
        def edit(name, data):
            if name != backup.MANIFEST:
                return data
            m = json.loads(data)
            m["postgres"][0][key] = value
            return json.dumps(m).encode()
        return edit

    with pytest.raises(backup.BackupError, match=r"dumped from PostgreSQL 99\.1; the target server is .* older"):
        backup.restore(fresh, _rewrite(s.archive, tmp_path / "v.tar.gz", newer("server_version", "99.1")))
    with pytest.raises(backup.BackupError, match="written by pg_dump 99, which pg_restore .* postgresql-client-99"):
        backup.restore(fresh, _rewrite(s.archive, tmp_path / "d.tar.gz", newer("pg_dump_major", 99)))
    assert not fresh.state.exists() and not {f"{PROJECT}_{r}" for r in ("prefect", "mlflow", "review")} & _server_dbs()

    sqlite_cfg = make_cfg(tmp_path / "sqlite", project=PROJECT)
    with pytest.raises(backup.BackupError, match="set stack.database_url"):
        backup.restore(sqlite_cfg, s.archive)


def test_missing_or_old_pg_dump_is_named_and_nothing_is_written(pg_cfg, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no PostgreSQL client tools on PATH
    with pytest.raises(backup.BackupError, match="pg_dump is not installed.*postgresql-client.*nothing was written"):
        backup.backup(pg_cfg, tmp_path / "b.tar.gz")
    old = bin_dir / "pg_dump"  # an older client: it reports its version as pg_dump 12 does
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.22'\n")
    old.chmod(0o755)
    with pytest.raises(backup.BackupError, match=r"pg_dump 12 cannot dump the PostgreSQL 1\d.* server.*"
                                                 r"postgresql-client-1\d\); nothing was written"):
        backup.backup(pg_cfg, tmp_path / "b.tar.gz")
    assert not list(tmp_path.glob("b.tar.gz*"))
