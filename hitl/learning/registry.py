"""The intent model in the MLflow model registry: log it as a pyfunc carrying the model folder, register it
and point an alias at it; find the version an alias points at; load a registered version back.

In MLflow a model is a pyfunc (`hitl.learning.serving.IntentPyfunc`) carrying the folder `modeling.save`
writes, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(texts)` serves it. With `export_texts`
the version also carries its ONNX export (`onnx/`: fp32, int8 when it keeps the top labels, and `onnx.json`
with the checks against torch; `hitl.learning.onnx_engine`), exported and checked once at registration, so
whoever loads it with an ONNX engine does not export again.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from hitl.learning import modeling, onnx_engine

log = logging.getLogger("hitl.registry")

PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.24.0", "tokenizers", "safetensors", "pandas", "numpy"]
ONNX_KEY = onnx_engine.ONNX_DIR  # the pyfunc artifact holding the export


def log_and_register(model: modeling.IntentModel, registered_name: str, alias: str, tags: dict[str, str],
                     client=None, export_texts: list[str] | None = None, batch_size: int = 64,
                     max_length: int = 64) -> str:
    """Log the model (pyfunc carrying the model folder) to the active MLflow run, register it, point `alias`
    at it. Returns the version. `client`: the caller's MlflowClient (else a new one). `export_texts`: export
    the network to ONNX beside it, checked against torch on a probe of these texts (ExportError when fp32
    does not match; an int8 that changes top labels is left out)."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.learning.serving import IntentPyfunc

    with tempfile.TemporaryDirectory() as tmp:
        folder = modeling.save(model, Path(tmp) / modeling.ARTIFACT_KEY)
        artifacts = {modeling.ARTIFACT_KEY: str(folder)}
        if export_texts is not None:
            meta = onnx_engine.export_network(model, Path(tmp) / ONNX_KEY, export_texts, batch_size, max_length)
            artifacts[ONNX_KEY] = str(Path(tmp) / ONNX_KEY)
            if mlflow.active_run() is not None:
                mlflow.log_metrics(_export_metrics(meta))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=IntentPyfunc(), artifacts=artifacts,
            code_paths=[str(Path(__file__).resolve().parents[1])], pip_requirements=PIP_REQUIREMENTS,
            registered_model_name=registered_name,
        )
    version = str(info.registered_model_version)
    client = client or MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, version, k, str(v))
    client.set_registered_model_alias(registered_name, alias, version)
    return version


def alias_version(registered_name: str, alias: str, client=None) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str((client or MlflowClient()).get_model_version_by_alias(registered_name, alias).version)
    except MlflowException:
        return None


def _export_metrics(meta: dict) -> dict[str, float]:
    out = {}
    for precision in ("fp32", "int8"):
        check = meta.get(precision)
        if check:
            out[f"onnx_{precision}_max_abs_diff"] = float(check["max_abs_diff"])
            out[f"onnx_{precision}_agreement"] = float(check["agreement"])
    out["onnx_int8_shipped"] = float(bool(meta.get("int8", {}).get("file")))
    return out


def load_registered(registered_name: str, alias_or_version: str, client=None, engine: str = "torch"
                    ) -> modeling.IntentModel:
    """Load `models:/NAME@alias` (or a version number) from the registry as an IntentModel. `engine` "onnx" or
    "onnx-int8": scored by the version's ONNX export (fp32 where int8 was refused at export); a version
    registered without an export is scored by torch, with a warning (`model.serving_engine` says which)."""
    import mlflow
    from mlflow import MlflowClient

    client = client or MlflowClient()
    if alias_or_version.isdigit():
        mv = client.get_model_version(registered_name, alias_or_version)
    else:
        mv = client.get_model_version_by_alias(registered_name, alias_or_version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{registered_name}/{mv.version}", dst_path=tmp)
        model = modeling.load(Path(local) / "artifacts" / modeling.ARTIFACT_KEY, version=str(mv.version))
        if engine != "torch":
            what = f"{registered_name} version {mv.version}"
            model.engine = onnx_engine.load_engine(Path(local) / "artifacts" / ONNX_KEY, engine, what)
            if model.engine is None:
                log.warning("%s was registered without an ONNX export: torch scores it", what)
        return model
