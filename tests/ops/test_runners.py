"""Partitioned scoring on the configured task runner (hitl/ops/runners.py, tasks/scoring.py): a Dask scheduler
is reached over TLS or loopback only; threads and a local Dask cluster give the same labels and probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from hitl.config import Config, RunnerConfig
from hitl.learning import modeling
from hitl.ops import runners
from hitl.sampling.stream import Spill
from tasks import scoring

LABELS = ["card_lost", "balance_inquiry", "transfer_failed", "card_arrival", "refund"]


# ---- the scheduler address: an open Dask scheduler runs anyone's code ----
@pytest.mark.parametrize("address", ["127.0.0.1:8786", "tcp://127.0.0.1:8786", "tcp://localhost:8786", "localhost",
                                     "tcp://[::1]:8786", "::1"])
def test_loopback_scheduler_is_accepted(address):
    assert RunnerConfig(kind="dask", dask_address=address).dask_address == address


def test_tls_scheduler_is_accepted_with_its_files():
    tls = {"tls_ca_file": "ca.pem", "tls_cert_file": "client.pem", "tls_key_file": "client.key"}
    assert RunnerConfig(kind="dask", dask_address="tls://dask.example.com:8786", **tls).tls_ca_file == "ca.pem"


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "0.0.0.0:8786", "dask.example.com:8786",
                                     "tcp://[2001:db8::1]:8786", "ws://127.0.0.1:8786", "tcp://127.0.0.1.evil.com:1"])
def test_open_scheduler_is_refused_saying_why(address):
    with pytest.raises(pydantic.ValidationError) as e:
        Config(labels=LABELS, runner={"kind": "dask", "dask_address": address})
    assert "neither tls:// nor loopback" in str(e.value) and "runs any code" in str(e.value)


@pytest.mark.parametrize(("runner", "says"), [
    ({"kind": "dask", "dask_address": "tls://dask.example.com:8786"}, "needs runner.tls_ca_file"),
    ({"kind": "threads", "dask_address": "127.0.0.1:8786"}, "set runner.kind: dask"),
    ({"kind": "dask", "dask_address": "127.0.0.1:8786", "tls_ca_file": "ca.pem"}, "is not tls://"),
    ({"kind": "dask", "partition_rows": 0}, "partition_rows"),
])
def test_runner_mistakes_are_refused(runner, says):
    with pytest.raises(pydantic.ValidationError, match=says):
        Config(labels=LABELS, runner=runner)


def test_task_runner_for_each_kind():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    threads = runners.task_runner(RunnerConfig(workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = runners.task_runner(RunnerConfig(kind="dask", workers=2))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
                                    "dashboard_address": None}
    remote = runners.task_runner(RunnerConfig(kind="dask", dask_address="tls://d.example.com:8786",
                                              tls_ca_file="ca.pem", tls_cert_file="c.pem", tls_key_file="c.key"))
    security = remote.client_kwargs["security"]
    assert remote.address == "tls://d.example.com:8786" and security.require_encryption
    assert (security.tls_ca_file, security.tls_client_cert, security.tls_client_key) == ("ca.pem", "c.pem", "c.key")


# ---- partitions and their recombination ----
def test_partitions_cover_the_rows_in_order():
    assert runners.partitions(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert runners.partitions(8, 4) == [slice(0, 4), slice(4, 8)]
    assert runners.partitions(3, 4) == [slice(0, 3)] and runners.partitions(0, 4) == [slice(0, 0)]


def test_partition_scores_join_in_the_order_of_the_texts():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=10).astype(np.float32)
    whole = modeling.Scores([f"l{i}" for i in range(10)], probs, probs.max(1), probs.max(1) / 2, probs.min(1),
                            rng.random(10))

    def part(s: slice) -> modeling.Scores:
        return modeling.Scores(whole.prediction[s], whole.probs[s], whole.confidence[s], whole.margin[s],
                               whole.entropy[s], whole.in_scope[s])

    joined = modeling.concat_scores([part(s) for s in runners.partitions(10, 4)])
    assert joined.prediction == whole.prediction
    for f in ("probs", "confidence", "margin", "entropy", "in_scope"):
        assert np.array_equal(getattr(joined, f), getattr(whole, f))


def test_one_partition_is_scored_in_place_without_a_runner(monkeypatch):
    calls = []
    monkeypatch.setattr(modeling, "score", lambda model, texts, *a: calls.append(texts) or "scored")
    monkeypatch.setattr(runners, "task_runner", lambda rc: pytest.fail("a runner was started for one partition"))
    cfg = Config(labels=LABELS, runner={"kind": "dask", "partition_rows": 3})
    assert scoring.score_texts(None, ["a", "b", "c"], cfg) == "scored" and calls == [["a", "b", "c"]]


# ---- the same labels and probabilities on every runner (a Prefect server, a Dask cluster: slow) ----
TEXTS = [f"{w} {'please ' * (i % 5)}help with my {o}" for i, (w, o) in enumerate(
    (w, o) for w in ("i lost my", "where is my", "why did my", "refund my", "what is the") for o in
    ("card", "balance", "transfer", "new card", "payment", "top up", "account", "pin"))]


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    import torch

    tmp = tmp_path_factory.mktemp("runners")
    m = modeling.load_base(Config(labels=LABELS, state_dir=str(tmp)))
    gen = torch.Generator().manual_seed(0)
    m.network.set_prototypes({i: torch.randn(m.network.weight.shape[1], generator=gen) for i in range(len(LABELS))})
    return modeling.save(m, tmp / "model")


@task(name="load-test-model", cache_policy=NO_CACHE, persist_result=False)
def _load(path: str) -> modeling.IntentModel:
    return modeling.load(Path(path))


@task(name="score-texts", cache_policy=NO_CACHE, persist_result=False)
def _score(model: modeling.IntentModel, texts: list[str], cfg: Config) -> modeling.Scores:
    return scoring.score_texts(model, texts, cfg)  # as sampling.score does: inside a task holding the model


@flow(name="score-in-partitions", validate_parameters=False)
def _score_flow(model_dir: str, texts: list[str], runner: dict) -> modeling.Scores:
    return _score(_load(model_dir), texts, Config(labels=LABELS, runner=runner))


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_threads_and_dask_give_the_same_labels_and_probabilities(harness, model_dir, recwarn):
    in_place = modeling.score(modeling.load(model_dir), TEXTS)
    assert len(set(in_place.prediction)) > 1  # a model that predicts one label would prove little
    runs = {"threads, one partition": {"workers": 1},
            "threads, 6 partitions": {"workers": 2, "partition_rows": 7},
            "local Dask, 2 processes, 3 partitions": {"kind": "dask", "workers": 2, "partition_rows": 15}}
    for name, runner in runs.items():
        got = _score_flow(str(model_dir), TEXTS, runner)
        assert got.prediction == in_place.prediction, name
        assert np.allclose(got.probs, in_place.probs, rtol=0, atol=1e-5), name
        assert np.allclose(got.entropy, in_place.entropy, rtol=0, atol=1e-5), name
    # the model went to each Dask worker once, not with every partition (nor in the parent task's context)
    assert not [w for w in recwarn if "large graph" in str(w.message)]


@pytest.mark.e2e
def test_sampling_scores_a_window_in_partitions(harness, model_dir, tmp_path):
    from tasks import sampling

    model = modeling.load(model_dir)
    traces = pd.DataFrame({"trace_id": [f"t{i}" for i in range(len(TEXTS))], "input": TEXTS,
                           "prediction": "card_lost", "confidence": 0.5})
    cfg = Config(labels=LABELS, state_dir=str(tmp_path), runner={"workers": 2, "partition_rows": 9})
    spill = Spill.create(tmp_path / "spill")  # the window in two partitions, each scored on the runner
    spill.add(traces.iloc[:20])
    spill.add(traces.iloc[20:])
    flow(name="score-window")(lambda: sampling.score(model, spill, cfg))()
    scored = pd.concat([spill.read("scored", i) for i in range(spill.parts)], ignore_index=True)
    assert not spill.path("traces", 0).exists()  # each stage replaces the one before
    s = modeling.score(model, TEXTS)
    assert scored["trace_id"].tolist() == traces["trace_id"].tolist()
    assert scored["prediction"].tolist() == s.prediction
    assert np.allclose(scored["confidence"], s.confidence, atol=1e-5)
    assert (scored["production_prediction"] == "card_lost").all()
