"""Models of the book: the seed's 784-128-10 MLP and a small CNN."""
from __future__ import annotations

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

    def __init__(self, c1: int = 32, c2: int = 64, hidden: int = 128, dropout: float = 0.25) -> None:
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


MODELS = {"mlp": MLP, "cnn": CNN}


def build_model(name: str, **kwargs) -> nn.Module:
    """A fresh model by name ('mlp' or 'cnn')."""
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
    return torch.cat([model(X[i:i + batch_size]).argmax(1) for i in range(0, len(X), batch_size)])
