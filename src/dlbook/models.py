"""Models of the book: the seed's 784-128-10 MLP, a small CNN, RNN/LSTM row readers, a small ViT."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """784-128-10 multilayer perceptron with ReLU, as in the seed program."""

    def __init__(self, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),  # no parameters: the architecture stays 784-128-10
            nn.Linear(hidden, 10),
        )

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, 10) of images (B, 1, 28, 28)."""
        return self.net(X)


class CNN(nn.Module):
    """Two conv-BN-ReLU-pool blocks and a small classifier head."""

    def __init__(
        self, c1: int = 32, c2: int = 64, hidden: int = 128, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),  # (B, c1, 28, 28)
            nn.BatchNorm2d(c1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),  # (B, c2, 14, 14)
            nn.BatchNorm2d(c2),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, c2, 7, 7)
        )
        self.head = nn.Sequential(
            nn.Flatten(),  # (B, c2 * 49)
            nn.Linear(c2 * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, 10) of images (B, 1, 28, 28)."""
        return self.head(self.features(X))


class RNNClassifier(nn.Module):
    """Reads an image as a sequence of 28 rows (28 pixels each); classifies the last state."""

    # tanh RNN: h_t = tanh(W x_t + U h_{t-1} + b); LSTMClassifier swaps in nn.LSTM
    recurrent: ClassVar[type[nn.Module]] = nn.RNN

    def __init__(self, hidden: int = 128, num_layers: int = 1) -> None:
        super().__init__()
        self.rnn = self.recurrent(28, hidden, num_layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, 10) of images (B, 1, 28, 28)."""
        rows = X[:, 0]  # (B, 28, 28): 28 time steps of 28 pixels
        outputs, _ = self.rnn(rows)  # (B, 28, hidden)
        return self.head(outputs[:, -1])  # the state after the last row


class LSTMClassifier(RNNClassifier):
    """The same row-by-row reader with LSTM cells: gated, additive updates of a cell state."""

    recurrent = nn.LSTM


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention, written out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # queries, keys and values in one matmul
        self.proj = nn.Linear(dim, dim)

    def forward(self, X: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D): each token becomes a weighted mix of all tokens' values."""
        B, T, D = X.shape
        qkv = self.qkv(X).view(B, T, 3, self.heads, D // self.heads)  # (B, T, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, T, Dh)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)  # (B, H, T, T)
        mixed = scores.softmax(dim=-1) @ v  # (B, H, T, Dh)
        return self.proj(mixed.transpose(1, 2).reshape(B, T, D))


class TransformerBlock(nn.Module):
    """Pre-norm Transformer encoder block: attention, then a per-token MLP, each residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(self, X: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D)."""
        X = X + self.attn(self.norm1(X))
        return X + self.mlp(self.norm2(X))


class TransformerClassifier(nn.Module):
    """A small ViT: non-overlapping patches as tokens, position embeddings, mean-pooled output."""

    def __init__(
        self, patch: int = 7, dim: int = 64, depth: int = 2, heads: int = 4, mlp_ratio: int = 2
    ) -> None:
        super().__init__()
        if 28 % patch:
            raise ValueError(f"patch={patch} must divide 28")
        num_tokens = (28 // patch) ** 2
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)  # one linear map per patch
        self.pos = nn.Parameter(0.02 * torch.randn(1, num_tokens, dim))  # learned positions
        self.blocks = nn.Sequential(
            *[TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, 10) of images (B, 1, 28, 28)."""
        tokens = self.embed(X).flatten(2).transpose(1, 2)  # (B, T, D), T = (28 / patch)^2
        Z = self.blocks(tokens + self.pos)  # (B, T, D)
        return self.head(self.norm(Z).mean(dim=1))  # average over tokens


MODELS = {
    "mlp": MLP,
    "cnn": CNN,
    "rnn": RNNClassifier,
    "lstm": LSTMClassifier,
    "transformer": TransformerClassifier,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """A fresh model by name: one of MODELS ('mlp', 'cnn', 'rnn', 'lstm', 'transformer')."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.inference_mode()
def predict(model: nn.Module, X: Tensor, batch_size: int = 1024) -> Tensor:
    """Predicted labels (N,) for images (N, 1, 28, 28), in eval mode."""
    model.eval()
    return torch.cat([model(X[i : i + batch_size]).argmax(1) for i in range(0, len(X), batch_size)])
