"""Deep networks over a table with text columns: each column's token ids get learned
vectors (an embedding), read as their mean (`mlp`) or in order by an LSTM (`lstm`), and
join the table's other features in front of the network's layers.

The rows are the usual float feature matrix (training_data.py): the other columns' features
first, then `length` token ids per text column (fitting.TextLayout). The ids arrive as
floats, exact ones, and the network casts them back, so the exported graph is the one
preprocessing graph (tokeniser included) joined in front of this network, like any table.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from service.worker.deep_networks import MLP
from service.worker.fitting import TextLayout
from service.worker.text import PAD

ALGORITHMS = ("mlp", "lstm")


class TextBody(nn.Module):
    """Token ids -> one vector per text column -> with the other features -> outputs."""

    def __init__(
        self,
        layout: TextLayout,
        n_out: int,
        *,
        sequence: bool,
        embedding_dim: int,
        hidden_units: int,
        hidden_layers: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.dense, self.length, self.sequence = layout.dense, layout.length, sequence
        self.embeddings = nn.ModuleList(
            nn.Embedding(ids, embedding_dim, padding_idx=PAD) for ids in layout.vocabularies
        )
        columns = len(layout.vocabularies)
        if sequence:
            self.readers = nn.ModuleList(
                nn.LSTM(
                    embedding_dim,
                    hidden_units,
                    num_layers=num_layers,
                    batch_first=True,
                    dropout=dropout if num_layers > 1 else 0.0,
                )
                for _ in range(columns)
            )
            self.head: nn.Module = nn.Sequential(
                nn.Dropout(dropout), nn.Linear(self.dense + hidden_units * columns, n_out)
            )
        else:
            self.readers = nn.ModuleList()
            width = self.dense + embedding_dim * columns
            self.head = MLP(width, n_out, hidden_units, hidden_layers, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, : self.dense]] if self.dense else []
        for index, embedding in enumerate(self.embeddings):
            start = self.dense + index * self.length
            ids = x[:, start : start + self.length].long()
            words = (ids != PAD).unsqueeze(2).to(x.dtype)
            vectors = embedding(ids)
            if self.sequence:
                parts.append(self._last_word(self.readers[index], vectors, words))
            else:
                # The mean over the text's words; an empty text is the zero vector.
                parts.append((vectors * words).sum(1) / words.sum(1).clamp(min=1.0))
        return self.head(torch.cat(parts, dim=1))

    @staticmethod
    def _last_word(reader: nn.Module, vectors: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """The LSTM's state after a text's last word (padding follows it and is not read;
        an empty text gives the state after one padding step)."""
        states, _ = reader(vectors)
        last = (words.sum(dim=(1, 2)).long() - 1).clamp(min=0)
        index = last.view(-1, 1, 1).expand(-1, 1, states.shape[2])
        return torch.gather(states, 1, index).squeeze(1)


def text_body(algorithm: str, params: dict[str, Any], layout: TextLayout, n_out: int) -> TextBody:
    """The untrained network of `algorithm` for a table with text columns."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{algorithm} does not read text columns; train one of {ALGORITHMS}")
    return TextBody(
        layout,
        n_out,
        sequence=algorithm == "lstm",
        embedding_dim=int(params["embedding_dim"]),
        hidden_units=int(params["hidden_units"]),
        hidden_layers=int(params.get("hidden_layers", 1)),
        num_layers=int(params.get("num_layers", 1)),
        dropout=float(params["dropout"]),
    )
