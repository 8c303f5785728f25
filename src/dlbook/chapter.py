"""Chapter setup: the one call after a chapter's `parameters` cell."""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

import torch

from .data import MNISTSplits, load_mnist
from .runtime import Config, seed_everything

C = TypeVar("C", bound=Config)


class Setup(NamedTuple):
    """What a chapter starts from: its validated config, its device and (optionally) MNIST."""

    cfg: Any  # the chapter's Config subclass
    device: torch.device
    data: MNISTSplits | None


def environment_line(device: torch.device) -> str:
    """One line naming the device, torch's version and its intra-op threads."""
    version = torch.__version__.split("+")[0]
    return f"device: {device} | torch {version} | threads: {torch.get_num_threads()}"


def setup(config: type[C], params: dict[str, Any], *, data: bool = True, threads: int = 0) -> Setup:
    """Validate the parameters, seed, pick the device, load MNIST (smoke: the subset), print.

    `cfg, device, data = dl.setup(ChapterConfig, globals())`. `threads` > 0 sets torch's
    intra-op threads first (process-wide). Raises ValueError naming a bad parameter.
    """
    cfg = config.from_params(params)
    device = cfg.torch_device  # raises if a requested device is not available
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    splits = None
    if data:
        splits = load_mnist(device)
        splits = splits.smoke() if cfg.smoke else splits
    print(cfg)
    print(environment_line(device))
    return Setup(cfg, device, splits)
