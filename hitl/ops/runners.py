"""Task runners for partitioned work (`runner.*` in the config): Prefect's thread pool in the flow's process, or
prefect-dask's `DaskTaskRunner` on a local cluster started for the run or on a scheduler reached over TLS or
loopback (hitl/config.py refuses any other address). See docs/operations.md, "Scale-out: task runners".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hitl.config import RunnerConfig

if TYPE_CHECKING:  # pragma: no cover
    from prefect.task_runners import TaskRunner


def partitions(n: int, rows: int) -> list[slice]:
    """Consecutive slices of at most `rows` items covering `range(n)`; one (maybe empty) slice when n <= rows."""
    return [slice(start, min(start + rows, n)) for start in range(0, n, rows)] or [slice(0, 0)]


def task_runner(cfg: RunnerConfig) -> TaskRunner:
    """The Prefect task runner `cfg` names, not yet started: enter it as a context manager."""
    if cfg.kind == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address is None:  # worker processes of one thread (torch gets a core each), loopback, no dashboard
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                              "host": "127.0.0.1", "dashboard_address": None})
    client_kwargs: dict[str, Any] = {}
    if cfg.dask_address.startswith("tls://"):
        from distributed.security import Security

        client_kwargs["security"] = Security(tls_ca_file=cfg.tls_ca_file, tls_client_cert=cfg.tls_cert_file,
                                             tls_client_key=cfg.tls_key_file, require_encryption=True)
    return DaskTaskRunner(address=cfg.dask_address, client_kwargs=client_kwargs)


def share(runner: TaskRunner, obj: Any) -> Any:
    """`obj` as the parameter of many tasks on a started `runner`: on Dask, sent to every worker once (a future
    the workers resolve) rather than once a task; on threads, `obj` itself."""
    client = getattr(runner, "client", None)  # only DaskTaskRunner has one
    return obj if client is None else client.scatter(obj, broadcast=True, hash=False)
