"""Simulated reviewers for the demo and tests: noisy oracles that resolve paused runs via the Prefect API.

They see only what a person sees (the stored form schema and description) plus the synthetic world's
ground truth, which stands in for a reviewer's knowledge. Each label is wrong with probability `noise`.

Every random draw is keyed by what it is about (the trace, and whether it is the trace's first, second, ...
label, or the adjudication), not by the order of answers: review runs suspend side by side and are resumed
in whatever order they appear, and the labels, hence the demo's figures, must not depend on it.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.review import forms, prefect_api


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str)
    return pd.read_json(path, lines=True, dtype=False)


def load_truth(cfg: Config) -> dict[str, str]:
    """trace_id -> true label: `simulation.truth_path` (a file or folder of JSONL/Parquet/CSV with trace_id and
    label, for any `files` source) or the synthetic world's truth files. Kept apart from the traces."""
    if cfg.truth_path is not None:
        root = cfg.truth_path
        if not root.exists():
            raise FileNotFoundError(f"Ground truth {root} does not exist (simulation.truth_path)")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                      if p.suffix in {".parquet", ".jsonl", ".json", ".csv"})
    else:
        files = sorted((cfg.world_dir / "truth").glob("*.parquet"))
    if not files:
        return {}
    truth = pd.concat([_read(f) for f in files], ignore_index=True)
    missing = {"trace_id", "label"} - set(truth.columns)
    if missing:
        raise ValueError(f"Ground truth {files[0]} lacks columns {sorted(missing)}; it needs trace_id and label")
    return dict(zip(truth["trace_id"].astype(str), truth["label"].astype(str), strict=True))


@dataclass
class SimulatedReviewers:
    cfg: Config
    truth: dict[str, str]
    turn: int = 0
    resolved: list[str] = field(default_factory=list)
    labelled_by: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # trace -> reviewers

    def __post_init__(self) -> None:
        if self.cfg.review.gold_path:  # seeded gold items: their known label is the truth
            from hitl.review.gold import read_seed_file

            seeded = read_seed_file(self.cfg.review.gold_path)
            self.truth.update(dict(zip(seeded["trace_id"].astype(str), seeded["label"].astype(str), strict=True)))

    def _rng(self, *key: object) -> np.random.Generator:
        """A generator for one decision, seeded by `simulation.seed` and what the decision is about."""
        digest = hashlib.sha256(repr((self.cfg.simulation.seed, *key)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _label(self, trace_id: str, nth: int | str = 0) -> str:
        """The `nth` label given to a trace (or the adjudication's, nth="adjudication")."""
        if trace_id not in self.truth:  # a window written after we started
            self.truth.update(load_truth(self.cfg))
        true = self.truth.get(trace_id)
        if true is None:
            raise KeyError(f"No ground truth for trace {trace_id}: set simulation.truth_path to a file that has it")
        rng = self._rng("label", trace_id, nth)
        if rng.random() < self.cfg.simulation.noise:
            return str(rng.choice([lab for lab in self.cfg.labels if lab != true]))
        return true

    def _reviewer_for(self, trace_ids: list[str]) -> str:
        """Whoever has labelled none of these traces (a second label must come from someone else), taking
        turns among the reviewers; failing that, whoever has labelled fewest of them."""
        names = self.cfg.simulation.reviewers
        order = [names[(self.turn + i) % len(names)] for i in range(len(names))]
        self.turn += 1
        return min(order, key=lambda r: sum(r in self.labelled_by[t] for t in trace_ids))

    def answer_review(self, run: prefect_api.PausedRun) -> dict:
        fields = forms.trace_ids_from_schema(run.schema)
        reviewer = self._reviewer_for(list(fields.values()))
        values: dict[str, object] = {forms.REVIEWER_FIELD: reviewer}
        for name, trace_id in fields.items():
            nth = len(self.labelled_by[trace_id])
            label = self._label(trace_id, nth)
            values[name] = forms.choice_for(label, run.fields[name].get("enum") or (), self.cfg.labels)  # as clicked
            if self._rng("rationale", trace_id, nth).random() < 0.2:
                values[f"{name}_rationale"] = f"{reviewer}: phrasing points to {label}"
            self.labelled_by[trace_id].append(reviewer)
        return values

    def answer_adjudication(self, run: prefect_api.PausedRun) -> dict:
        values: dict[str, object] = {forms.REVIEWER_FIELD: self.cfg.simulation.adjudicator}
        for name, trace_id in forms.trace_ids_from_schema(run.schema).items():
            values[name] = self._label(trace_id, "adjudication")
        return values

    def answer_approval(self, run: prefect_api.PausedRun) -> dict:
        ok = "## Gate: PASS" in run.description  # INCONCLUSIVE and FAIL: the simulated approver never overrides
        return {"decision": "approve" if ok else "reject", "approver": self.cfg.simulation.approver,
                "reason": "release gate passed on the production estimate" if ok else
                "release gate did not pass: keeping the champion"}

    def step(self) -> int:
        """Resolve every paused run currently waiting; returns how many were resumed."""
        n = 0
        for run in prefect_api.paused_runs():
            if run.form == prefect_api.REVIEW_FORM:
                values = self.answer_review(run)
            elif run.form == prefect_api.ADJUDICATION_FORM:
                values = self.answer_adjudication(run)
            elif run.form == prefect_api.APPROVAL_FORM:
                values = self.answer_approval(run)
            else:
                continue
            try:
                prefect_api.resume(run.id, values, run.response_key)
            except RuntimeError as e:  # e.g. resumed by someone else meanwhile: log it and carry on
                print(f"could not resume {run.id}: {e}", flush=True)
                continue
            print(f"resumed {run.form} run {run.id} ({run.name})", flush=True)
            self.resolved.append(run.id)
            n += 1
        return n

    def run(self, should_stop: Callable[[], bool], poll_s: float = 1.0) -> int:
        """Keep resolving until `should_stop()` is true; returns the number of runs resumed."""
        while not should_stop():
            if not self.step():
                time.sleep(poll_s)
        return len(self.resolved)
