"""The MLflow pyfunc wrapper that serves a registered intent model.

`mlflow.pyfunc.load_model("models:/NAME@champion").predict(["where is my card?"])` returns a DataFrame with
the predicted label, its probability and the margin to the runner-up. The model folder travels as the
pyfunc's artifact; the weights are loaded in `load_context`, never pickled with the wrapper.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd


class IntentPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from hitl.learning import modeling

        self._model = modeling.load(Path(context.artifacts[modeling.ARTIFACT_KEY]), version="pyfunc")

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from hitl.learning import modeling

        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        s = modeling.score(self._model, texts)
        return pd.DataFrame({"label": s.prediction, "confidence": s.confidence, "margin": s.margin})

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_model"}  # weights live in the artifact
