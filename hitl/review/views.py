"""The review store's read models: DataFrames (and counts) over the review tables, for datasets, metrics,
the report and the CLI. Reads only; `ReviewStore` carries them (it subclasses `ReviewViews`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hitl.review.tables import (
    DISPUTED,
    OPEN,
    QUEUED,
    RESOLVED,
    AnnotationRow,
    Batch,
    GoldAnswer,
    GoldItem,
    Item,
    Proposal,
    Resolution,
    ReviewerCheck,
    item_dict,
    suggestions_of,
)
from hitl.vocabulary import RANDOM

if TYPE_CHECKING:  # pandas is imported where a frame is built: a store user that reads none skips it
    import pandas as pd


class ReviewViews:
    _session: sessionmaker[Session]

    def resolutions(self) -> pd.DataFrame:
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Resolution.id, Item.trace_id, Resolution.kind, Resolution.reviewer,
                                    Resolution.label, Resolution.reason, Resolution.created_at)
                             .join(Item, Item.id == Resolution.item_id).order_by(Resolution.id)).all()
        return pd.DataFrame(rows, columns=["resolution_id", "trace_id", "kind", "reviewer", "label", "reason",
                                           "created_at"])

    def counts(self) -> dict[str, int]:
        with self._session() as s:
            by_status = dict(s.execute(select(Item.status, func.count()).group_by(Item.status)).all())
            open_batches = s.scalar(select(func.count()).select_from(Batch).where(Batch.status == OPEN))
            n_ann = s.scalar(select(func.count()).select_from(AnnotationRow))
        return {QUEUED: by_status.get(QUEUED, 0), RESOLVED: by_status.get(RESOLVED, 0),
                DISPUTED: by_status.get(DISPUTED, 0), "open_batches": open_batches or 0,
                "annotations": n_ann or 0}

    def proposals(self) -> pd.DataFrame:
        """Every "none of these fits" answer: the proposed label, the item, who proposed it and why."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Proposal.proposed_label, Item.trace_id, Item.input, Proposal.reviewer,
                                    Proposal.rationale, Proposal.status, Proposal.created_at)
                             .join(Item, Item.id == Proposal.item_id).order_by(Proposal.id)).all()
        return pd.DataFrame(rows, columns=["proposed_label", "trace_id", "input", "reviewer", "rationale", "status",
                                           "created_at"])

    def gold_answers(self) -> pd.DataFrame:
        """Every answer to a gold item: reviewer, batch, the known label, the answer, whether it was right."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(GoldAnswer.reviewer, GoldAnswer.batch_id, GoldItem.source_ref, GoldItem.label,
                                    GoldAnswer.label, GoldAnswer.correct, GoldAnswer.created_at)
                             .join(GoldItem, GoldItem.id == GoldAnswer.gold_id).order_by(GoldAnswer.id)).all()
        return pd.DataFrame(rows, columns=["reviewer", "batch_id", "trace_id", "gold_label", "answer", "correct",
                                           "created_at"])

    def reviewer_checks(self) -> pd.DataFrame:
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(ReviewerCheck.reviewer, ReviewerCheck.answers, ReviewerCheck.correct,
                                    ReviewerCheck.upper, ReviewerCheck.ok, ReviewerCheck.sent_to_adjudication,
                                    ReviewerCheck.created_at).order_by(ReviewerCheck.id)).all()
        return pd.DataFrame(rows, columns=["reviewer", "answers", "correct", "upper", "ok", "sent_to_adjudication",
                                           "created_at"])

    def items(self) -> pd.DataFrame:
        """Every review item's lifecycle and what its form showed of the champion: trace_id, selection_reason,
        status, created_at, resolved_at, prediction, suggestions (a list of [label, probability], or None)."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Item.trace_id, Item.selection_reason, Item.status, Item.created_at,
                                    Item.resolved_at, Item.prediction, Item.suggestions).order_by(Item.id)).all()
        out = pd.DataFrame(rows, columns=["trace_id", "selection_reason", "status", "created_at", "resolved_at",
                                          "prediction", "suggestions"])
        out["suggestions"] = pd.Series([suggestions_of(v) for v in out["suggestions"]], index=out.index, dtype=object)
        return out

    def batches(self) -> pd.DataFrame:
        """Every review batch: id, flow_run_id, status, reviewer, created_at, submitted_at."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Batch.id, Batch.flow_run_id, Batch.status, Batch.reviewer, Batch.created_at,
                                    Batch.submitted_at).order_by(Batch.created_at)).all()
        return pd.DataFrame(rows, columns=["id", "flow_run_id", "status", "reviewer", "created_at", "submitted_at"])

    def annotations(self) -> pd.DataFrame:
        """Every annotation with its trace_id (long format)."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(
                select(AnnotationRow.id, Item.trace_id, AnnotationRow.reviewer, AnnotationRow.label,
                       AnnotationRow.rationale, AnnotationRow.batch_id, AnnotationRow.created_at)
                .join(Item, Item.id == AnnotationRow.item_id).order_by(AnnotationRow.id)
            ).all()
        cols = ["annotation_id", "trace_id", "reviewer", "label", "rationale", "batch_id", "created_at"]
        return pd.DataFrame(rows, columns=cols)

    def resolved(self, annotations: pd.DataFrame | None = None) -> pd.DataFrame:
        """Resolved items with their agreed label, reviewers and annotation ids (one row per trace).

        Pass `annotations()` if you already have it, to save reading them again.
        """
        import pandas as pd

        with self._session() as s:
            items = s.scalars(select(Item).where(Item.status == RESOLVED).order_by(Item.id)).all()
            recs = [item_dict(it) | {"label": it.label} for it in items]
        ann = self.annotations() if annotations is None else annotations
        if not recs:
            return pd.DataFrame(columns=["trace_id", "label", "reviewers", "annotation_ids"])
        df = pd.DataFrame(recs)
        res = self.resolutions().drop_duplicates("trace_id", keep="last")  # the latest decision holds
        people = pd.concat([ann[["trace_id", "reviewer"]], res[["trace_id", "reviewer"]]])
        ids = pd.concat([ann.assign(ref=ann["annotation_id"].astype(str))[["trace_id", "ref"]],
                         res.assign(ref="r" + res["resolution_id"].astype(str))[["trace_id", "ref"]]])
        df = df.join(people.groupby("trace_id")["reviewer"].agg(lambda r: ",".join(sorted(set(r))))
                     .rename("reviewers"), on="trace_id")
        df = df.join(ids.groupby("trace_id")["ref"].agg(",".join).rename("annotation_ids"), on="trace_id")
        return df.join(res.set_index("trace_id")["kind"].rename("resolution"), on="trace_id")

    def random_items(self) -> pd.DataFrame:
        """Every item of the random draw with its status: the regression set, including what is missing."""
        import pandas as pd

        with self._session() as s:
            rows = s.execute(select(Item.trace_id, Item.window, Item.stratum, Item.inclusion_prob, Item.status,
                                    Item.label).where(Item.selection_reason == RANDOM).order_by(Item.id)).all()
        return pd.DataFrame(rows, columns=["trace_id", "window", "stratum", "inclusion_prob", "status", "label"])

    def known_text_groups(self) -> set[str]:
        """Text groups (normalised texts) already in the queue, labelled or not."""
        with self._session() as s:
            return set(s.scalars(select(Item.text_group)))
