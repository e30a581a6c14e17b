"""The intent model in the MLflow model registry: log it as a pyfunc carrying the model folder, register it
and point an alias at it; find the version an alias points at; load a registered version back.

In MLflow a model is a pyfunc (`hitl.learning.serving.IntentPyfunc`) carrying the folder `modeling.save`
writes, so `mlflow.pyfunc.load_model("models:/NAME@champion").predict(texts)` serves it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hitl.learning import modeling

PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.24.0", "tokenizers", "safetensors", "pandas", "numpy"]


def log_and_register(model: modeling.IntentModel, registered_name: str, alias: str, tags: dict[str, str],
                     client=None) -> str:
    """Log the model (pyfunc carrying the model folder) to the active MLflow run, register it, point `alias`
    at it. Returns the version. `client`: the caller's MlflowClient (else a new one)."""
    import mlflow
    from mlflow import MlflowClient

    from hitl.learning.serving import IntentPyfunc

    with tempfile.TemporaryDirectory() as tmp:
        folder = modeling.save(model, Path(tmp) / modeling.ARTIFACT_KEY)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=IntentPyfunc(), artifacts={modeling.ARTIFACT_KEY: str(folder)},
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


def load_registered(registered_name: str, alias_or_version: str, client=None) -> modeling.IntentModel:
    """Load `models:/NAME@alias` (or a version number) from the registry as an IntentModel."""
    import mlflow
    from mlflow import MlflowClient

    client = client or MlflowClient()
    if alias_or_version.isdigit():
        mv = client.get_model_version(registered_name, alias_or_version)
    else:
        mv = client.get_model_version_by_alias(registered_name, alias_or_version)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(f"models:/{registered_name}/{mv.version}", dst_path=tmp)
        return modeling.load(Path(local) / "artifacts" / modeling.ARTIFACT_KEY, version=str(mv.version))
