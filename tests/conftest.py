"""Shared fixtures: a private data folder seeded from the official MNIST archives, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import datasets

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = [name for name, _ in datasets.MNIST.resources]


def find_mnist_archives() -> Path:
    """A folder holding the four official .gz files: $DLBOOK_MNIST_MIRROR, data/, or ../shared."""
    candidates = [
        os.environ.get("DLBOOK_MNIST_MIRROR", ""),
        REPO / "data" / "MNIST" / "raw",
        REPO.parent / "shared" / "data" / "MNIST" / "raw",
    ]
    for folder in candidates:
        if folder and all((Path(folder) / name).is_file() for name in ARCHIVES):
            return Path(folder)
    pytest.fail(
        "the MNIST archives are needed for the data tests: set DLBOOK_MNIST_MIRROR to "
        "the folder holding the four official .gz files (see README)"
    )


@pytest.fixture(scope="session")
def mnist_archives() -> Path:
    return find_mnist_archives()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the internet: torchvision's mirrors point at a closed loopback port."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory, mnist_archives) -> Path:
    """A data root with MNIST extracted, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ARCHIVES:
        shutil.copyfile(mnist_archives / name, raw / name)
    return root


@pytest.fixture(scope="session")
def mnist(mnist_root):
    """The whole of MNIST as normalized CPU tensors."""
    import dlbook as dl

    return dl.load_mnist("cpu", root=mnist_root)


@pytest.fixture
def tiny_splits():
    """A small synthetic MNIST-shaped data set (random images, learnable labels)."""
    import dlbook as dl

    g = torch.Generator().manual_seed(0)
    X = torch.randn(600, 1, 28, 28, generator=g)
    y = (X.mean(dim=(1, 2, 3)) * 40).long().clamp(-4, 5) + 4  # labels depend on the image
    return dl.MNISTSplits(X[:400], y[:400], X[400:500], y[400:500], X[500:], y[500:])
