"""The intent network: a pretrained encoder, mean pooling, and a cosine classification head.

MiniLM-style sentence encoders were trained with mean pooling, not the [CLS] pooler, so the sentence
vector here is the attention-masked mean of the last hidden states, L2-normalised. Each label has a head
row; logits are `scale * cos(sentence, row) + bias`. A row can be initialised from the class mean of a
label's examples (its prototype), so a label learns from a handful of examples and the untrained network
already behaves like a nearest-centroid classifier. Labels that have never had an example are inactive:
their logits are masked, so the network never predicts a label it has not seen.

This module imports torch at import time; import it lazily from code that must stay light.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

INACTIVE_LOGIT = -1e4


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of the token vectors that the attention mask keeps."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed, dim=-1)


class CosineIntentNetwork(nn.Module):
    """Encoder + mean pooling + cosine head with a learnable logit scale and per-label bias."""

    def __init__(self, encoder: nn.Module, num_labels: int, scale: float = 20.0):
        super().__init__()
        self.encoder = encoder
        hidden = int(encoder.config.hidden_size)
        self.weight = nn.Parameter(torch.randn(num_labels, hidden) * 0.01)
        self.bias = nn.Parameter(torch.zeros(num_labels))
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.register_buffer("active", torch.zeros(num_labels, dtype=torch.bool))

    @property
    def config(self):  # Trainer and the collators read model.config
        return self.encoder.config

    def head_parameters(self) -> list[nn.Parameter]:
        return [self.weight, self.bias, self.log_scale]

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return mean_pool(out.last_hidden_state, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None
                ) -> SequenceClassifierOutput:
        logits = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def head(self, sentence: torch.Tensor) -> torch.Tensor:
        """The logits of sentence vectors: scaled cosine to each label's row plus its bias; inactive labels masked."""
        logits = self.log_scale.exp() * sentence @ F.normalize(self.weight, dim=-1).T + self.bias
        return logits.masked_fill(~self.active, INACTIVE_LOGIT)

    def pseudo_outlier_loss(self, sentence: torch.Tensor, labels: torch.Tensor, fallback: int) -> torch.Tensor:
        """Cross-entropy toward the `fallback` label of pseudo outliers (Zhan et al., "Out-of-Scope Intent Detection
        with Self-Supervision and Discriminative Training", ACL 2021): the normalised midpoint of each row's sentence
        vector and the previous row's, where the two have different in-scope labels. It teaches the encoder to keep
        the space between intents empty, where traffic of an intent nobody foresaw tends to land. Zero (with a
        gradient graph) when the batch has no such pair."""
        partner = labels.roll(1)
        pair = (labels != partner) & (labels != fallback) & (partner != fallback)
        if not bool(pair.any()):
            return sentence.sum() * 0.0
        mix = F.normalize(sentence[pair] + sentence.roll(1, dims=0)[pair], dim=-1)
        target = torch.full((int(pair.sum()),), fallback, dtype=labels.dtype, device=labels.device)
        return F.cross_entropy(self.head(mix), target)

    @torch.no_grad()
    def set_prototypes(self, rows: dict[int, torch.Tensor]) -> None:
        """Point head rows at class means (normalised) and activate them; biases start at zero."""
        for i, vec in rows.items():
            self.weight[i] = F.normalize(vec, dim=-1)
            self.bias[i] = 0.0
            self.active[i] = True

    @torch.no_grad()
    def activate_without_prototype(self, indices: list[int]) -> None:
        """Activate labels that have no meaningful class mean (e.g. out-of-scope): a small random row,
        so its cosine starts near zero for every input and training shapes it."""
        for i in indices:
            self.weight[i] = torch.randn_like(self.weight[i]) * 0.01
            self.bias[i] = 0.0
            self.active[i] = True
