"""Small builders shared by the domain unit tests (configs, trace records, review items, JSONL files, a local
HTTP server)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd

from hitl.config import Config

LABELS = ["card_lost", "card_arrival", "refund_request"]
COHORTS = ["channel", "locale", "tier"]

# A launch set of three intents and one new intent with five reviewed examples (the recipe and fault tests).
LAUNCH = {
    "card_lost": ["i lost my card", "my card is lost", "card lost please block it", "lost the card yesterday",
                  "i have lost my bank card", "block my lost card", "my card got lost", "card lost on the bus"],
    "balance_inquiry": ["what is my balance", "show my balance", "balance please", "how much balance is left",
                        "check my balance", "my account balance", "tell me the balance", "current balance"],
    "transfer_failed": ["my transfer failed", "the transfer did not go through", "transfer failed again",
                        "why did my transfer fail", "failed transfer to john", "transfer error failed",
                        "my bank transfer failed", "transfer keeps failing"],
}
NEW = ("crypto_wallet", ["link my crypto wallet", "crypto wallet connect", "add a crypto wallet",
                         "my crypto wallet is missing", "crypto wallet setup"])


def make_cfg(tmp_path: Path, labels: list[str] | None = None, **kw: Any) -> Config:
    """A Config rooted in tmp_path; keyword arguments are top-level Config fields (dicts for sections)."""
    return Config(labels=list(labels or LABELS), state_dir=str(tmp_path / "state"), **kw)


def trace_record(i: int | str, **overrides: Any) -> dict[str, Any]:
    """One valid production trace as a logging system writes it (one JSONL object)."""
    rec: dict[str, Any] = {
        "trace_id": f"tr-{i}",
        "timestamp": "2025-03-01T08:00:00.000Z",
        "input": f"I lost my card number {i}",
        "output": "I've frozen your card.",
        "model_version": "v1",
        "prediction": "card_lost",
        "confidence": 0.8,
        "channel": "web_chat",
        "locale": "en-US",
        "tier": "free",
        "context": None,
        "metadata": json.dumps({"outcome": "resolved"}),
    }
    rec.update(overrides)
    return rec


def without(rec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in keys}


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    """Write one line per entry: dicts as JSON, str as UTF-8 text, bytes verbatim."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            out.append(json.dumps(line).encode())
        elif isinstance(line, str):
            out.append(line.encode())
        else:
            out.append(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def review_items(n: int, *, prefix: str = "t", required: int | list[int] = 1, channel: str = "web_chat",
                 priority: float | list[float] = 1.0) -> pd.DataFrame:
    """n ReviewItem rows ready for ReviewStore.enqueue (with the COHORTS columns)."""
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    return pd.DataFrame({
        "trace_id": ids,
        "input": [f"message {t}" for t in ids],
        "output": "reply",
        "context": None,
        "prediction": "card_lost",
        "confidence": 0.5,
        "model_version": "v1",
        "channel": channel,
        "locale": "en-US",
        "tier": "free",
        "selection_reason": "uncertain",
        "evaluator_reasons": "uncertainty: 1 - margin 0.90 >= window p80 0.85",
        "priority": priority,
        "required_annotations": required,
    })


def forget_mlflow_uris() -> None:
    """Undo mlflow.set_registry_uri (a module global and $MLFLOW_REGISTRY_URI): later tests' clients must
    follow their own tracking URI, not a registry left behind by a fixture."""
    import os

    import mlflow

    mlflow.set_registry_uri("")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's tokenizer: trains in seconds."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hitl.learning import modeling

    base = modeling.base_model_path(Config(labels=["a", "b"], state_dir=str(folder)))
    tok = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with `handler` in a thread; yields its base URL (http://127.0.0.1:PORT)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def terminal_review(monkeypatch, form, config: Path, reviewer: str, answers: str):
    """`hitl review` (typer's CliRunner) over one paused run whose form is `form`, offline: a stand-in
    `paused_runs` plays the Prefect server and the resume is recorded. Returns (the CLI result, the inputs sent)."""
    import uuid

    from typer.testing import CliRunner

    from hitl.cli import app, console
    from hitl.review import prefect_api

    run = prefect_api.PausedRun(str(uuid.uuid4()), "review-batch-x", "review-batch", prefect_api.REVIEW_FORM,
                                form.model_json_schema(), form._description, "2026-01-01T00:00:00")
    sent: list[dict] = []
    monkeypatch.setattr(prefect_api, "paused_runs", lambda form=None: [run])
    monkeypatch.setattr("prefect.flow_runs.resume_flow_run", lambda flow_run_id, run_input: sent.append(run_input))
    monkeypatch.setattr("hitl.cli.reviewer._stack_ready", lambda cfg: None)
    monkeypatch.setattr("hitl.cli.apply_environment", lambda cfg: None)
    monkeypatch.setattr(console, "_width", 400)  # no wrapping: one description per line
    result = CliRunner().invoke(app, ["review", "--reviewer", reviewer, "-c", str(config)], input=answers)
    return result, sent
