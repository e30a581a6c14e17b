"""Sampling's state operations on the review store's database (`hitl.sampling.tables`): the random draws'
inclusion probabilities, and the source watermarks that implement `hitl.sampling.watermarks`.

`ReviewStore` is the one object on that database, so it carries these operations (it subclasses
`SamplingState`); they need nothing from the review tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from hitl.db import now as _now
from hitl.db import utc
from hitl.sampling.tables import Draw, QuarantinedRow, SourceFile, SourceWindow

if TYPE_CHECKING:  # pandas is imported where a frame is built: a store user that reads none skips it
    import pandas as pd


class SamplingState:
    _session: sessionmaker[Session]

    def draw_rates(self, window: str) -> dict[str, float]:
        """Stratum -> inclusion probability of the main random draw of `window` ({} if none yet)."""
        with self._session() as s:
            rows = s.execute(select(Draw.stratum, Draw.rate).where(Draw.window == window, Draw.kind == "main"))
            return dict(rows.all())

    def draws(self) -> pd.DataFrame:
        """Every random draw stratum recorded so far."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Draw.window, Draw.kind, Draw.stratum, Draw.population, Draw.drawn, Draw.rate,
                                    Draw.created_at).order_by(Draw.id)).all()
        return pd.DataFrame(rows, columns=["window", "kind", "stratum", "population", "drawn", "rate", "created_at"])

    def source_files(self, source: str) -> dict[str, dict]:
        """path -> {sha256, ts_min, ts_max, windows} of each file of `source` read before; `windows` lists the
        (since, until) covered for the content read last."""
        with self._session() as s:
            files = s.scalars(select(SourceFile).where(SourceFile.source == source)).all()
            covered = s.execute(select(SourceWindow.path, SourceWindow.sha256, SourceWindow.since, SourceWindow.until)
                                .where(SourceWindow.source == source)).all()
        out = {f.path: {"sha256": f.sha256, "ts_min": f.ts_min, "ts_max": f.ts_max, "windows": []} for f in files}
        for path, sha, since, until in covered:
            if path in out and out[path]["sha256"] == sha:
                out[path]["windows"].append((since, until))
        return out

    def processed_windows(self, source: str) -> set[tuple[int | None, int | None]]:
        """Every window (since, until) some file of `source` has been read for."""
        with self._session() as s:
            return set(s.execute(select(SourceWindow.since, SourceWindow.until).where(SourceWindow.source == source)
                                 .distinct()).all())

    def source_windows(self, source: str) -> list[dict]:
        """Every window of `source` read before: since, until, read_at (its latest read, ns since the epoch) and
        take_below (the cap an MLflow window got at its first read; None: every trace)."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(SourceWindow.since, SourceWindow.until, func.max(SourceWindow.read_at),
                                    func.max(SourceWindow.take_below)).where(SourceWindow.source == source)
                             .group_by(SourceWindow.since, SourceWindow.until)).all()
        return [{"since": a, "until": b, "read_at": int(pd.Timestamp(utc(r)).value), "take_below": t}
                for a, b, r, t in rows]

    def record_source_files(self, source: str, files: Iterable[Mapping]) -> None:
        """Record what was just read of each file: path, size, mtime_ns, sha256, rows, ts_min, ts_max."""
        with self._session.begin() as s:
            for f in files:
                row = s.scalar(select(SourceFile).where(SourceFile.source == source, SourceFile.path == f["path"]))
                if row is None:
                    row = SourceFile(source=source, path=f["path"])
                    s.add(row)
                row.size, row.mtime_ns, row.sha256, row.rows = f["size"], f["mtime_ns"], f["sha256"], f["rows"]
                row.ts_min, row.ts_max, row.read_at = f["ts_min"], f["ts_max"], _now()

    def cover_source_windows(self, source: str, windows: Iterable[Mapping]) -> None:
        """Record that each (path, sha256, since, until) was read whole and its traces stored (idempotent); the
        windows of the file's earlier contents go (the new content is read for every processed window). A window
        covered again keeps its cap (take_below) and moves its read_at to the later read."""
        with self._session.begin() as s:
            for w in windows:
                s.execute(delete(SourceWindow).where(SourceWindow.source == source, SourceWindow.path == w["path"],
                                                     SourceWindow.sha256 != w["sha256"]))
                key = (SourceWindow.source == source, SourceWindow.path == w["path"],
                       SourceWindow.sha256 == w["sha256"],
                       SourceWindow.since.is_(None) if w["since"] is None else SourceWindow.since == w["since"],
                       SourceWindow.until.is_(None) if w["until"] is None else SourceWindow.until == w["until"])
                row = s.scalar(select(SourceWindow).where(*key))
                at = w.get("read_at") or _now()
                if row is None:
                    s.add(SourceWindow(source=source, path=w["path"], sha256=w["sha256"], since=w["since"],
                                       until=w["until"], read_at=at, take_below=w.get("take_below")))
                elif utc(row.read_at) < utc(at):
                    row.read_at = at

    def record_quarantined(self, source: str, rows: Iterable[tuple[str, str, str]]) -> set[tuple[str, str]]:
        """Record quarantined rows (path, row_key, reason) not recorded before; returns their (path, row_key)."""
        with self._session.begin() as s:
            known = set(s.execute(select(QuarantinedRow.path, QuarantinedRow.row_key)
                                  .where(QuarantinedRow.source == source)).all())
            new = {}
            for path, key, reason in rows:
                if (path, key) not in known:
                    new.setdefault((path, key), QuarantinedRow(source=source, path=path, row_key=key, reason=reason))
            s.add_all(new.values())
        return set(new)
