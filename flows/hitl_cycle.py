"""Flow: one turn of the loop. sample -> review (until the queue is drained) -> adjudicate disputes -> dataset ->
fine-tune -> eval."""

from __future__ import annotations

from prefect import flow

from flows.adjudicate import adjudicate
from flows.fine_tune import fine_tune
from flows.register_dataset import register_dataset
from flows.regression_eval import regression_eval
from flows.review_batch import review_batch
from flows.sample_traces import sample_traces
from hitl.ops import orphans


@flow(name="hitl-cycle", log_prints=True)
def hitl_cycle(config_path: str = "configs/demo.yaml", max_batches: int = 100) -> dict:
    orphans.claim_current_run()  # each stage's flow claims its own run in `setup`
    sampled = sample_traces(config_path)
    reviews = []
    for _ in range(max_batches):
        r = review_batch(config_path)
        if r["status"] == "empty":
            break
        reviews.append(r)
    adjudications = []
    for _ in range(max_batches):
        a = adjudicate(config_path)
        if a["status"] == "empty":
            break
        adjudications.append(a)
    dataset = register_dataset(config_path)
    if not dataset["created"]:
        print(f"No new labels since {dataset['dataset']}: nothing to fine-tune on, cycle ends here.")
        return {"sampled": sampled, "review_batches": len(reviews), "adjudications": len(adjudications),
                "dataset": dataset}
    trained = fine_tune(config_path, dataset["version"])
    evaluated = regression_eval(config_path, dataset["version"])
    print(f"Cycle done: {len(reviews)} review batches, {len(adjudications)} adjudication batches, "
          f"dataset {dataset['dataset']}, "
          f"challenger v{trained['challenger_version']}, report {evaluated['report']}")
    return {"sampled": sampled, "review_batches": len(reviews), "adjudications": len(adjudications),
            "dataset": dataset, "fine_tune": trained,
            "regression_eval": {k: v for k, v in evaluated.items() if k != "table"}}


if __name__ == "__main__":
    hitl_cycle()
