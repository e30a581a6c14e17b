"""Selection policy: which scored traces of a window reviewers label for training, and why.

One review budget (in annotations) per sampling run is spent in this order:
1. the representative random draw (hitl/sampling/representative.py): a fixed share, stratified on what is
   known before labelling; it becomes the regression set and serves calibration. The policy never shapes,
   filters or collapses it, and never trains on it;
2. policy picks, each with its reason, drawn from the rest of the window:
   - `uncertain`: the champion hesitates (1 - margin, or normalised entropy), ranked within the window;
   - `novel`: density shift in the frozen encoder's space: the trace's neighbourhood is crowded with this
     window's traffic but sparse in what the model was trained on (launch and labelled rows). A cohort the
     fine-tuned model is confidently wrong about sits inside a launch class in the model's own space, but
     stands apart here;
   - `disagreement`: a frozen-embedding nearest-neighbour classifier over the labelled rows gives little
     support to the champion's prediction;
   - `flagged`: an automatic evaluator (e.g. task completion) failed the trace;
   - `consensus`: the mean of the three ranks above: traffic that several signals flag at once. While new
     traffic is a small share of a window, each signal alone also ranks plenty of ordinary traffic high;
     their agreement is rarer and more often new (section 13 of docs/benchmarks.md).
   Components share the picks by configured weights. Diversity (as in Cluster-Margin, Citovsky et al. 2021):
   each component clusters its shortlist (k-means in frozen space, about one cluster per `cluster_quota`
   picks) and takes the clusters' best rows in turn, so one dense group of confusing traffic cannot eat
   the budget while a new region of traffic still gets picks across it. With `cluster_pick: typical` a
   cluster's most typical row goes first instead of its best-scoring one (TypiClust, Hacohen et al. 2022: at
   a low budget a label on a region's typical row teaches more than one on its edge). Near-duplicates (same normalised
   text, or cosine above a threshold) are collapsed to one representative, and texts already queued or
   labelled are skipped.

Every component is a within-window rank, so thresholds are quantiles of the current window, never fixed
probabilities (a 77-way model has low top-1 confidence everywhere).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hitl.config import Config
from hitl.hashing import stable_fraction, text_group
from hitl.sampling import evaluators, windows
from hitl.sampling.vectors import Vectors, as_vectors, blocks, everything, subset
from hitl.vocabulary import RANDOM, SELECTION_REASONS

COMPONENTS = tuple(r for r in SELECTION_REASONS if r != RANDOM)
SIGNALS = ("uncertain", "novel", "disagreement")  # the ranked signals; `consensus` is their mean rank
SHORTLIST_FACTOR = 10  # a large window's candidates: each component's best SHORTLIST_FACTOR x its picks


@dataclass
class Candidates:
    """A window's traces as the policy sees them; rows of `frozen` align with `traces`."""

    traces: pd.DataFrame  # trace_id, input or text_group, prediction, margin, entropy, flagged (+ cohorts, ...)
    frozen: Vectors | np.ndarray  # frozen-encoder vectors of traces["input"], L2-normalised
    reference: np.ndarray  # frozen vectors of what the model was trained on (launch + labelled rows)
    reference_labels: np.ndarray  # their labels
    known_groups: set[str] = field(default_factory=set)  # text groups already queued or labelled
    # the full rows (input, output, evaluator_reasons, ...) of some of `traces`, in their order, when `traces`
    # holds only what selection reads (a window sampled in partitions keeps the rest on disk)
    hydrate: Callable[[pd.DataFrame], pd.DataFrame] | None = None


@dataclass
class Selection:
    items: pd.DataFrame  # the chosen traces with selection_reason, priority, required_annotations
    spend: dict[str, int]  # annotations by use: random, gold, overlap, and each policy reason


# ---------------------------------------------------------------------------------------------- components
def percentile(x: np.ndarray) -> np.ndarray:
    """Rank of each value within the window, in (0, 1] (ties share their average rank)."""
    if len(x) == 0:
        return np.zeros(0)
    return pd.Series(x).rank(method="average", pct=True).to_numpy()


def density_shift(window: Vectors | np.ndarray, reference: np.ndarray, k: int, seed: int = 0,
                  max_points: int = 5000) -> np.ndarray:
    """kNN density ratio of the window over the reference, at each window point: among the k nearest
    neighbours in (window sample + reference), the share from the window, each side scaled by its size.
    High where this window's traffic is dense and the reference is not (a new cluster). Linear in the window:
    the neighbours come from at most `max_points` of each side, and the window is queried a block at a time."""
    from sklearn.neighbors import NearestNeighbors

    window = as_vectors(window)
    n = len(window)
    if n == 0:
        return np.zeros(0)
    if len(reference) == 0:
        return np.ones(n)
    rng = np.random.default_rng(seed)
    win = everything(window) if n <= max_points else window.take(rng.choice(n, max_points, replace=False))
    ref = reference if len(reference) <= max_points else reference[rng.choice(len(reference), max_points,
                                                                                replace=False)]
    pool = np.vstack([win, ref])
    is_win = np.r_[np.ones(len(win), bool), np.zeros(len(ref), bool)]
    k = max(1, min(k, len(pool) - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(pool)
    # a window point finds itself (or its exact duplicate) first
    idx = np.vstack([nn.kneighbors(b)[1] for b in blocks(window)])[:, 1:]
    w = is_win[idx].sum(axis=1)
    return ((w + 1) / (len(win) + 1)) / ((k - w + 1) / (len(ref) + 1))


def neighbour_support(window: Vectors | np.ndarray, predictions: np.ndarray, reference: np.ndarray,
                      reference_labels: np.ndarray, k: int) -> np.ndarray:
    """Similarity-weighted share of the k nearest labelled rows that carry the champion's prediction (the
    window queried a block at a time)."""
    from sklearn.neighbors import NearestNeighbors

    window = as_vectors(window)
    if len(window) == 0 or len(reference) == 0:
        return np.ones(len(window))
    k = max(1, min(k, len(reference)))
    nn = NearestNeighbors(n_neighbors=k).fit(reference)
    found = [nn.kneighbors(b) for b in blocks(window)]
    dist, idx = np.vstack([d for d, _ in found]), np.vstack([i for _, i in found])
    sim = np.clip(1.0 - dist**2 / 2.0, 0.0, None) + 1e-6  # unit vectors: cosine from euclidean distance
    agree = reference_labels[idx] == np.asarray(predictions)[:, None]
    return (sim * agree).sum(axis=1) / sim.sum(axis=1)


def component_scores(c: Candidates, cfg: Config, signals: Iterable[str] = SIGNALS) -> pd.DataFrame:
    """Per trace, each component's within-window rank in (0, 1]; `flagged` is 1/0 (ties broken by
    uncertainty); `consensus` the mean of the ranks of `signals`."""
    s = cfg.selection
    t = c.traces
    unc = percentile(evaluators.uncertainty_of(t, cfg).to_numpy(float))
    out = pd.DataFrame(index=t.index)
    out["uncertain"] = unc
    out["novel"] = percentile(density_shift(c.frozen, c.reference, s.neighbors, s.seed))
    support = neighbour_support(c.frozen, t["prediction"].to_numpy(), c.reference, c.reference_labels, s.neighbors)
    out["disagreement"] = percentile(1.0 - support)
    flagged = t["flagged"].to_numpy(bool)
    out["flagged"] = np.where(flagged, 0.5 + unc / 2, 0.0)
    out["consensus"] = consensus(out, signals)
    return out


def consensus(ranks: pd.DataFrame, signals: Iterable[str] = SIGNALS) -> np.ndarray:
    """Per trace, the mean of the signals' within-window ranks (`SIGNALS`): high where several agree."""
    return ranks[list(signals)].mean(axis=1).to_numpy()


# ---------------------------------------------------------------------------------------------- diversity
def near_duplicate_groups(texts: list[str], vectors: np.ndarray, cosine: float,
                          groups: list[str] | None = None) -> np.ndarray:
    """A group id per row: rows with the same normalised text, or connected by cosine >= `cosine`, share one.
    `groups`: the texts' `text_group`s, when known already."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    n = len(groups if groups is not None else texts)
    if n == 0:
        return np.zeros(0, dtype=int)
    codes, _ = pd.factorize(pd.Series(groups if groups is not None else [text_group(t) for t in texts]))
    rows, cols = [np.arange(n)], [codes + n]  # link each row to a node for its normalised text
    if cosine < 1.0 and n > 1:
        radius = float(np.sqrt(max(0.0, 2.0 - 2.0 * cosine)))
        graph = NearestNeighbors(radius=radius).fit(vectors).radius_neighbors_graph(vectors, mode="connectivity")
        g = graph.tocoo()
        rows.append(g.row)
        cols.append(g.col)
    r, col = np.concatenate(rows), np.concatenate(cols)
    size = n + int(codes.max()) + 1  # nodes: the rows, then one per normalised text
    adj = coo_matrix((np.ones(len(r)), (r, col)), shape=(size, size))
    _, labels = connected_components(adj, directed=False)
    return labels[:n]


def clusters(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means cluster of each row (MiniBatchKMeans for large sets)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = len(vectors)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=int)
    algo = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048) if n > 5000 else \
        KMeans(n_clusters=k, random_state=seed, n_init=3)
    return algo.fit_predict(vectors)


def score_order(score: np.ndarray) -> np.ndarray:
    """Rows with a positive score, best first."""
    order = np.argsort(-score, kind="stable")
    return order[score[order] > 0]


def typicality(vectors: np.ndarray, k: int = 20) -> np.ndarray:
    """Inverse mean distance of each row to its k nearest other rows (TypiClust's typicality)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(vectors) - 1)
    if k < 1:
        return np.ones(len(vectors))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(vectors).kneighbors(vectors)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-6)


def diverse_order(score: np.ndarray, vectors: Vectors | np.ndarray, n_pick: int, quota: int, seed: int,
                  shortlist_factor: int = 3, typical: bool = False) -> np.ndarray:
    """Candidates of one component in the order it should take them (rows with score 0 left out).

    Cluster-then-round-robin on the shortlist (the best `shortlist_factor * n_pick` rows): k-means with about
    one cluster per `quota` picks, then each cluster's best row in turn, clusters ordered by their best score.
    A region that fills the shortlist (a new cluster of traffic) gets several clusters and so several picks,
    spread across it; one dense blob cannot take everything. The rest follows in score order.
    `typical`: within a cluster the most typical rows first (`typicality` within the shortlist), clusters
    ordered by their mean score."""
    order = score_order(score)
    short = order[:max(0, shortlist_factor * n_pick)]
    if len(short) <= 1 or n_pick <= 1:
        return order
    vecs = as_vectors(vectors).take(short)
    lab = clusters(vecs, int(np.ceil(n_pick / quota)), seed)
    if typical:
        typ = typicality(vecs)
        members = [np.flatnonzero(lab == c) for c in np.unique(lab)]
        members.sort(key=lambda m: -score[short[m]].mean())  # stable: equal means keep their cluster order
        queues = [short[m[np.argsort(-typ[m], kind="stable")]] for m in members]
    else:
        queues = [short[lab == c] for c in pd.unique(lab)]  # each in score order; clusters by their best row
    rounds = max(len(q) for q in queues)
    interleaved = [q[r] for r in range(rounds) for q in queues if r < len(q)]
    return np.r_[np.asarray(interleaved, dtype=int), order[len(short):]]


def pick(orders: dict[str, np.ndarray], costs: np.ndarray, budget: int, weights: dict[str, float]
         ) -> list[tuple[int, str]]:
    """Weighted round-robin over components: the component furthest behind its share of the budget takes the
    next row of its order that nobody took yet. Returns (row, reason) until `budget` annotations are spent."""
    active = {c: w for c, w in weights.items() if w > 0 and c in orders}
    total = sum(active.values())
    taken: set[int] = set()
    cursor = dict.fromkeys(active, 0)
    spent_by = dict.fromkeys(active, 0.0)
    out: list[tuple[int, str]] = []
    spent = 0
    while spent < budget:
        alive = [c for c in active if cursor[c] < len(orders[c])]
        if not alive:
            break
        comp = min(alive, key=lambda c: spent_by[c] - active[c] / total * (spent + 1))
        o = orders[comp]
        while cursor[comp] < len(o) and int(o[cursor[comp]]) in taken:
            cursor[comp] += 1
        if cursor[comp] >= len(o):
            continue
        i = int(o[cursor[comp]])
        if spent + costs[i] > budget:
            break
        taken.add(i)
        spent += int(costs[i])
        spent_by[comp] += float(costs[i])
        out.append((i, comp))
    return out


# ---------------------------------------------------------------------------------------------- the policy
def required_annotations(trace_ids: pd.Series, overlap_share: float) -> np.ndarray:
    """2 for the stable-hash share of traces that get a second, independent label (agreement), else 1."""
    return np.array([2 if stable_fraction(t, "overlap") < overlap_share else 1 for t in trace_ids], dtype=int)


def random_items(draw: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """The representative draw as review items: reason `random`, labelled `random_annotations` times,
    reviewed first (their labels are the release verdict)."""
    out = draw.copy()
    out["selection_reason"] = RANDOM
    out["priority"] = 2.0
    out["required_annotations"] = cfg.selection.random_annotations
    return out


def policy_budget(cfg: Config, random_drawn: int) -> int:
    """Annotations left for the policy once the random draw is paid for."""
    return max(0, cfg.selection.budget - random_drawn * cfg.selection.random_annotations)


def random_draw_size(cfg: Config) -> int:
    """Traces in a run's random draw: its share of the budget, in annotations, over the labels per random item."""
    return int(cfg.selection.budget * cfg.selection.random_share) // cfg.selection.random_annotations


def draw_rng(seed: int, window_keys: Iterable[str]) -> np.random.Generator:
    """The random draw's generator: the configured seed and the run's set of windows (so a re-run of the same
    windows draws the same traces)."""
    return np.random.default_rng([seed, zlib.crc32(",".join(sorted(window_keys)).encode())])


@dataclass
class Plan:
    pool: pd.DataFrame  # the run's evaluated traces with their random-draw window
    drawn: windows.Draw  # the representative draw and its records
    chosen: Selection  # the draw, then the policy's picks


def draw_and_select(evaluated: pd.DataFrame, frozen: np.ndarray, reference: np.ndarray,
                    reference_labels: np.ndarray, cfg: Config, run_key: str,
                    draw_rates: Callable[[str], Mapping[str, float]], known_groups: Callable[[], set[str]],
                    hydrate: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> Plan:
    """One sampling run's picks: the traces in windows, the representative draw of each window (late traces at
    their window's earlier rates, `draw_rates(window)`), then the policy's picks (texts in `known_groups()`
    skipped). `frozen` aligns with `evaluated`, `reference` with `reference_labels`; `hydrate` as in
    `Candidates`."""
    sel = cfg.selection
    pool = evaluated.assign(window=windows.window_keys(evaluated["timestamp"], sel.window, run_key))
    prior = {w: draw_rates(w) for w in pool["window"].unique()}
    rng = draw_rng(sel.seed, pool["window"].unique())
    drawn = windows.draw(pool, sel.strata, random_draw_size(cfg), prior, rng, sel.min_per_stratum)
    cand = Candidates(pool, frozen, reference, reference_labels, known_groups(), hydrate)
    return Plan(pool, drawn, select_for_review(cand, cfg, drawn.items))


def select_for_review(c: Candidates, cfg: Config, random_draw: pd.DataFrame, budget: int | None = None,
                      weights: dict[str, float] | None = None, diversity: bool = True, dedup: bool = True,
                      signals: Iterable[str] = SIGNALS) -> Selection:
    """The review items of one window: the random draw as given, then policy picks under the budget left.

    `weights`, `diversity` and `dedup` override the config, `signals` the ranks `consensus` averages (benchmark
    ablations)."""
    s = cfg.selection
    weights = dict(s.components if weights is None else weights)
    budget = policy_budget(cfg, len(random_draw)) if budget is None else budget
    t = c.traces.reset_index(drop=True)
    groups = _groups(t)
    drawn_groups = set(_groups(random_draw)) if len(random_draw) else set()
    rand = random_items(c.hydrate(random_draw) if c.hydrate else random_draw, cfg) if len(random_draw) else None
    eligible = ~t["trace_id"].isin(set(random_draw["trace_id"]) if len(random_draw) else set()).to_numpy()
    if dedup:  # texts already reviewed, queued, or in the regression draw are not worth a second label
        eligible &= ~np.isin(groups, list(c.known_groups | drawn_groups))
    pos = np.flatnonzero(eligible)
    cand = Candidates(t.iloc[pos].reset_index(drop=True), subset(c.frozen, pos), c.reference, c.reference_labels)
    scores = component_scores(cand, cfg, signals) if len(pos) else pd.DataFrame(columns=list(COMPONENTS))
    active = {comp: w for comp, w in weights.items() if w > 0 and comp in scores.columns}
    total = sum(active.values()) or 1.0
    n_picks = {comp: int(np.ceil(budget * w / total)) for comp, w in active.items()}
    if dedup and len(pos):  # one representative per near-duplicate group: the best-scoring member
        keep = one_per_near_duplicate(cand.frozen, scores, groups[pos], list(weights), n_picks,
                                      s.near_duplicate_cosine, s.dedup_all_pairs_max)
        cand = Candidates(cand.traces.iloc[keep].reset_index(drop=True), subset(cand.frozen, keep), c.reference,
                          c.reference_labels)
        scores = scores.iloc[keep].reset_index(drop=True)
    n_cand = len(cand.traces)
    costs = required_annotations(cand.traces["trace_id"], cfg.review.overlap_share) if n_cand else np.zeros(0, int)
    orders = {}
    for comp in active:
        col = scores[comp].to_numpy(float)
        orders[comp] = diverse_order(col, cand.frozen, n_picks[comp], s.cluster_quota, s.seed,
                                     typical=s.cluster_pick == "typical") if diversity else score_order(col)
    picks = pick(orders, costs, budget, active)
    picked = cand.traces.iloc[[i for i, _ in picks]]
    chosen = (c.hydrate(picked) if c.hydrate else picked).copy()
    chosen["selection_reason"] = [r for _, r in picks]
    chosen["priority"] = [float(scores[r].iat[i]) for i, r in picks]
    chosen["required_annotations"] = [int(costs[i]) for i, _ in picks]
    shown = [k for k in scores.columns if k in SIGNALS or k in active]  # consensus only where it picks
    chosen["evaluator_reasons"] = _reason_text(chosen, scores.iloc[[i for i, _ in picks]][shown])
    parts = [p for p in (rand, chosen) if p is not None and len(p)]
    items = pd.concat(parts, ignore_index=True) if parts else chosen
    for col, empty in (("inclusion_prob", np.nan), ("window", None), ("stratum", None)):
        if col not in items:  # random-draw columns: empty for policy picks
            items[col] = empty
    items["inclusion_prob"] = items["inclusion_prob"].astype(float)
    return Selection(items.reset_index(drop=True), spend(items))


def _groups(traces: pd.DataFrame) -> np.ndarray:
    """Each trace's `text_group`: a column of a window sampled in partitions, else computed from its input."""
    if "text_group" in traces:
        return traces["text_group"].to_numpy(dtype=object)
    return np.array([text_group(x) for x in traces["input"]], dtype=object)


def one_per_near_duplicate(vectors: Vectors, scores: pd.DataFrame, groups: np.ndarray, components: list[str],
                           n_picks: dict[str, int], cosine: float, all_pairs_max: int) -> np.ndarray:
    """Rows to keep (ascending): the best-scoring member (its best component score) of each group of rows with
    the same normalised text or connected by cosine >= `cosine`.

    Up to `all_pairs_max` rows every pair is compared. Above it the cost must not grow with the square of the
    window: same-text groups are collapsed over the whole window (a hash), and near duplicates only among the
    rows a component could pick, its best SHORTLIST_FACTOR x `n_picks` rows; the others are left out."""
    best = scores[[k for k in components if k in scores.columns]].max(axis=1).to_numpy()
    rows = np.arange(len(groups))
    if len(rows) > all_pairs_max:
        rows = np.sort(_best_per_group(groups, best))
        short: set[int] = set()
        for comp, n_pick in n_picks.items():
            order = score_order(scores[comp].to_numpy(float)[rows])
            short.update(rows[order[:SHORTLIST_FACTOR * max(n_pick, 1)]].tolist())
        rows = np.array(sorted(short), dtype=int)
    dup = near_duplicate_groups([], vectors.take(rows), cosine, groups=list(groups[rows]))
    return rows[np.sort(_best_per_group(dup, best[rows]))]


def _best_per_group(groups: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Position of each group's best row (the first of equals)."""
    frame = pd.DataFrame({"g": groups, "b": -best}).sort_values(["g", "b"], kind="stable")
    return frame.drop_duplicates("g").index.to_numpy()


def _reason_text(chosen: pd.DataFrame, scores: pd.DataFrame) -> list[str]:
    """What the reviewer and the audit see: the reason, every component's window percentile, and the
    evaluators' own reasons."""
    base = chosen["evaluator_reasons"] if "evaluator_reasons" in chosen else pd.Series([""] * len(chosen))
    out = []
    for (_, row), ev in zip(scores.iterrows(), base, strict=True):
        ranks = ", ".join(f"{k} p{100 * v:.0f}" for k, v in row.items() if k != "flagged")
        out.append(f"{ranks}; {ev}" if ev else ranks)
    return out


def spend(items: pd.DataFrame) -> dict[str, int]:
    """How the budget was spent, in annotations: per reason, plus the second labels (overlap) among them."""
    if items.empty:
        return {"total": 0, "overlap": 0}
    by = items.groupby("selection_reason")["required_annotations"].sum().astype(int).to_dict()
    policy = items["selection_reason"] != RANDOM
    overlap = int((items.loc[policy, "required_annotations"] - 1).clip(lower=0).sum())
    return {**by, "overlap": overlap, "gold": 0, "total": int(items["required_annotations"].sum())}


def counts_by_reason(selected: pd.DataFrame, cohort: str | None) -> pd.DataFrame:
    """A reason x cohort table of selected counts (for the run's artifact)."""
    if cohort is None or selected.empty or cohort not in selected.columns:
        return selected.groupby("selection_reason").size().rename("count").reset_index()
    return pd.crosstab(selected["selection_reason"], selected[cohort], margins=True).reset_index()
