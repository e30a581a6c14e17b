"""Tasks that get the run's review store or MLflow client keep their cache keys: persisted tasks never hash
them (a resumed run opens new ones and must still find its persisted result)."""

from __future__ import annotations

from prefect.cache_policies import CompoundCachePolicy, Inputs, RunId, TaskSource

from tasks import evaluation, review


def _inputs(task) -> list[Inputs]:
    policy = task.cache_policy
    return [p for p in (policy.policies if isinstance(policy, CompoundCachePolicy) else [policy])
            if isinstance(p, Inputs)]


def test_evaluate_release_keys_on_its_inputs_but_not_the_store_or_client():
    t = evaluation.evaluate_release
    assert t.name == "evaluate-release" and t.persist_result is True
    kinds = {type(p) for p in t.cache_policy.policies}
    assert kinds == {TaskSource, RunId, Inputs}
    (inputs,) = _inputs(t)
    args = {"config_path": "c.yaml", "dataset_version": 3, "synthetic_launch": None}
    one = inputs.compute_key(None, {**args, "store": "store of one process", "client": 1}, {})
    other = inputs.compute_key(None, {**args, "store": "store of the resumed run", "client": 2}, {})
    assert one == other == inputs.compute_key(None, args, {})
    plain = Inputs()  # the same inputs, nothing left out: the store would change the key
    assert plain.compute_key(None, {**args, "store": "a"}, {}) != plain.compute_key(None, {**args, "store": "b"}, {})
    assert one != inputs.compute_key(None, {**args, "dataset_version": 4}, {})


def test_the_persisted_adjudication_batch_does_not_hash_its_inputs():
    t = review.disputed_items
    assert t.name == "take-disputed-items" and t.persist_result is True
    assert not _inputs(t)


def test_no_task_hashes_a_store_or_client_it_is_given():
    import inspect

    from prefect import Task

    from tasks import common, datasets, sampling, simulation, training

    seen = 0
    for module in (common, datasets, evaluation, review, sampling, simulation, training):
        for t in vars(module).values():
            if not isinstance(t, Task):
                continue
            shared = {"store", "client"} & set(inspect.signature(t.fn).parameters)
            if not shared:
                continue
            seen += 1
            for inputs in _inputs(t):
                assert shared <= set(inputs.exclude), (t.name, shared)
    assert seen >= 15
