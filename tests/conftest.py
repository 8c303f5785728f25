"""Shared fixtures: data folders seeded from the official (Fashion-)MNIST archives, offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import datasets

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = [name for name, _ in datasets.MNIST.resources]
FASHION_ARCHIVES = [name for name, _ in datasets.FashionMNIST.resources]


def find_archives(folder: str, env: str) -> Path:
    """A folder holding a data set's four official .gz files: $env, data/, or ../shared."""
    candidates = [
        os.environ.get(env, ""),
        REPO / "data" / folder / "raw",
        REPO.parent / "shared" / "data" / folder / "raw",
    ]
    names = [name for name, _ in getattr(datasets, folder).resources]
    for candidate in candidates:
        if candidate and all((Path(candidate) / name).is_file() for name in names):
            return Path(candidate)
    pytest.fail(
        f"the {folder} archives are needed for the data tests: set {env} to "
        "the folder holding the four official .gz files (see README)"
    )


def find_mnist_archives() -> Path:
    """A folder holding the four official MNIST .gz files."""
    return find_archives("MNIST", "DLBOOK_MNIST_MIRROR")


def seed_root(root: Path, folder: str, archives: Path) -> Path:
    """Copy the four official archives of torchvision's `folder` data set into root; return root."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for name, _ in getattr(datasets, folder).resources:
        shutil.copyfile(archives / name, raw / name)
    return root


@pytest.fixture(scope="session")
def mnist_archives() -> Path:
    return find_mnist_archives()


@pytest.fixture(scope="session")
def fashion_archives() -> Path:
    return find_archives("FashionMNIST", "DLBOOK_FASHION_MNIST_MIRROR")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the internet: torchvision's mirrors point at a closed loopback port."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory, mnist_archives) -> Path:
    """A data root with MNIST extracted, shared by the tests that only read it."""
    return seed_root(tmp_path_factory.mktemp("data"), "MNIST", mnist_archives)


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory, fashion_archives) -> Path:
    """A data root with Fashion-MNIST's archives, shared by the tests that only read it."""
    return seed_root(tmp_path_factory.mktemp("fashion"), "FashionMNIST", fashion_archives)


@pytest.fixture(scope="session")
def mnist(mnist_root):
    """The whole of MNIST as normalized CPU tensors."""
    import dlbook as dl

    return dl.load_mnist("cpu", root=mnist_root)


@pytest.fixture(scope="session")
def fashion(fashion_root):
    """The whole of Fashion-MNIST as normalized CPU tensors."""
    import dlbook as dl

    return dl.load_fashion_mnist("cpu", root=fashion_root)


@pytest.fixture
def tiny_splits():
    """A small synthetic MNIST-shaped data set (random images, learnable labels)."""
    import dlbook as dl

    g = torch.Generator().manual_seed(0)
    X = torch.randn(600, 1, 28, 28, generator=g)
    y = (X.mean(dim=(1, 2, 3)) * 40).long().clamp(-4, 5) + 4  # labels depend on the image
    return dl.MNISTSplits(X[:400], y[:400], X[400:500], y[400:500], X[500:], y[500:])
