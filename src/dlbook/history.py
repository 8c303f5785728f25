"""The per-epoch record of a training run, shared by the package's training loops."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch record of a training run."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # training time of each epoch

    def append(self, train_loss: float, val_loss: float, val_acc: float, seconds: float) -> None:
        """Record one epoch."""
        for name, value in zip(asdict(self), (train_loss, val_loss, val_acc, seconds)):
            getattr(self, name).append(float(value))

    @property
    def num_epochs(self) -> int:
        """Epochs recorded so far."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready lists (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> History:
        """The inverse of `to_dict`."""
        return cls(**record)

    def to_frame(self) -> Any:
        """The history as a pandas DataFrame indexed by epoch (1-based)."""
        import pandas as pd

        frame = pd.DataFrame(asdict(self))
        frame.index = range(1, len(frame) + 1)
        frame.index.name = "epoch"
        return frame
