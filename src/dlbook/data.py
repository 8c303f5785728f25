"""MNIST and Fashion-MNIST, offline first (a mirror folder, then the internet); preloaded tensors.

Both data sets ship as the same four idx archives, so one `DatasetSpec` each (torchvision class,
MD5 sums, pixel statistics, class names, mirror variable) drives one code path: find, verify,
extract, load. Batch iterators for preloaded tensors are here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from .runtime import data_dir, file_digest

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # pixel mean and std of the 60k training images in [0, 1]
# The same for Fashion-MNIST's 60k training images (tests/test_fashion.py recomputes both).
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
NUM_VAL = 5_000  # the last 5,000 training images are the fixed validation split
SMOKE_SIZES = (2_000, 1_000)  # a smoke run's training images, and validation and test images
MIRROR_ENV = "DLBOOK_MNIST_MIRROR"
FASHION_MIRROR_ENV = "DLBOOK_FASHION_MNIST_MIRROR"
DOWNLOAD_TIMEOUT = 60.0  # seconds a download may wait for the network before giving up
# MD5 of the four official files once decompressed: extracted files are checked before each use.
EXTRACTED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_EXTRACTED_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# Fashion-MNIST's labels 0-9 in order (the same names as torchvision's FashionMNIST.classes).
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclass(frozen=True)
class DatasetSpec:
    """A 28x28, 10-class data set in the idx format: where it lives, how to verify and scale it."""

    title: str  # its name in messages
    source: type[datasets.MNIST]  # torchvision's class: archive MD5s, folder name, idx parser
    extracted_md5: dict[str, str]  # MD5 of each archive's decompressed idx file
    mean: float  # pixel mean of the training images in [0, 1]
    std: float  # pixel standard deviation of the training images in [0, 1]
    classes: tuple[str, ...]  # the name of each label 0-9
    mirror_env: str  # the variable naming a folder that holds the four archives

    def files(self) -> dict[str, str]:
        """The four official archive names and the MD5 sums torchvision checks."""
        return dict(self.source.resources)

    def raw(self, root: Path) -> Path:
        """The folder under a data root that holds the archives (torchvision's layout)."""
        return root / self.source.__name__ / "raw"


MNIST_SPEC = DatasetSpec(
    "MNIST",
    datasets.MNIST,
    EXTRACTED_MD5,
    MNIST_MEAN,
    MNIST_STD,
    tuple(str(digit) for digit in range(10)),
    MIRROR_ENV,
)
FASHION_MNIST_SPEC = DatasetSpec(
    "Fashion-MNIST",
    datasets.FashionMNIST,
    FASHION_EXTRACTED_MD5,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    FASHION_CLASSES,
    FASHION_MIRROR_ENV,
)


class DataError(RuntimeError):
    """A data set could not be found, fetched or read; the message says how to fix it."""


def mnist_files() -> dict[str, str]:
    """The four official MNIST archive names and the MD5 sums torchvision checks."""
    return MNIST_SPEC.files()


def _write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Let `write` fill target.part, then rename it: a crash never leaves a half-written target."""
    part = target.with_name(target.name + ".part")
    try:
        write(part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _copy_from_mirror(spec: DatasetSpec, mirror: Path, raw: Path) -> None:
    """Copy verified archives from the mirror into raw/, atomically (never a half-written file)."""
    if not mirror.is_dir():
        hint = (
            ""
            if mirror.is_absolute()
            else f" (a relative path is read from the current "
            f"folder, here {Path.cwd()}; notebooks run from chapters/, so give an absolute path)"
        )
        raise DataError(
            f"{spec.mirror_env}={mirror} is not a folder{hint}; point it at the folder "
            f"holding the four {spec.title} .gz files, or unset it."
        )
    raw.mkdir(parents=True, exist_ok=True)
    for name, md5 in spec.files().items():
        source, target = mirror / name, raw / name
        if target.exists() or not source.exists():
            continue
        if file_digest(source, "md5") != md5:
            raise DataError(
                f"corrupted {spec.title} file in the mirror: {source} (MD5 mismatch). "
                "Replace it with the official file."
            )
        _write_atomically(target, functools.partial(shutil.copyfile, source))


def _check_archives(spec: DatasetSpec, raw: Path) -> None:
    """Raise naming the first archive in raw/ whose MD5 is wrong."""
    for name, md5 in spec.files().items():
        path = raw / name
        if path.exists() and file_digest(path, "md5") != md5:
            raise DataError(
                f"corrupted {spec.title} file: {path} (MD5 mismatch with torchvision's). "
                "Delete it and run again to fetch a fresh copy."
            )


def _gunzip(archive: Path, target: Path) -> None:
    """Decompress a .gz file into target."""
    with gzip.open(archive, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _extract(spec: DatasetSpec, raw: Path) -> None:
    """Decompress each verified archive whose idx file is missing or not the official one.

    Goes through a temporary file, so a crash never leaves a half-written idx file.
    """
    for name in spec.files():
        archive, target = raw / name, raw / name.removesuffix(".gz")
        if target.exists() and file_digest(target, "md5") == spec.extracted_md5[target.name]:
            continue
        if not archive.exists():
            if target.exists():
                raise DataError(
                    f"corrupted {spec.title} file: {target} (not the official content) and no "
                    f"archive {archive.name} beside it to extract again. Delete {target} and run "
                    "again."
                )
            continue
        _write_atomically(target, functools.partial(_gunzip, archive))


@contextlib.contextmanager
def _writable(spec: DatasetSpec, root: Path) -> Iterator[None]:
    """Turn a data folder that cannot be written (read-only, a file) into a DataError."""
    try:
        yield
    except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as err:
        raise DataError(
            f"cannot write {spec.title} under {root} ({err.strerror or err}: {err.filename}). "
            "Make the folder writable, or set DLBOOK_DATA_DIR to a writable folder, and run again."
        ) from None


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A default timeout for sockets opened inside (torchvision's downloads set none)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def _download(spec: DatasetSpec, root: Path, raw: Path, timeout: float) -> None:
    """Let torchvision download, verify and extract the missing archives, or raise a DataError."""
    env, title = spec.mirror_env, spec.title
    mirror = os.environ.get(env)
    missing = [name for name in spec.files() if not (raw / name).exists()]
    fix = (
        f"{env}={mirror} lacks {', '.join(missing)}: copy the official files there"
        if mirror
        else f"set {env}=<folder holding the four official .gz files>"
    )
    try:
        with _socket_timeout(timeout):
            spec.source(str(root), train=True, download=True)
    except TimeoutError:
        raise DataError(
            f"downloading {title} stalled: no answer from the network for {timeout:g} s. Check "
            f"the connection or proxy, or {fix} (or copy them into {raw}) and run again."
        ) from None
    except RuntimeError as err:
        if not str(err).startswith("Error downloading"):
            raise DataError(f"could not prepare {title} in {raw} ({err})") from None
        raise DataError(
            f"{title} is not in {raw} and could not be downloaded ({err.args[0].splitlines()[0]} "
            f"from any mirror). Either connect to the internet, or {fix} (or copy them into "
            f"{raw}) and run again."
        ) from None


def ensure_dataset(
    spec: DatasetSpec, root: Path | None = None, timeout: float = DOWNLOAD_TIMEOUT
) -> Path:
    """Make sure `spec`'s data set is extracted under `root` (default: data_dir()) and verified.

    Order: files already in `<root>/<torchvision class>/raw`, then the folder named by
    `spec.mirror_env`, then the internet (giving up after `timeout` seconds without an answer).
    Returns root.
    """
    root = Path(root) if root is not None else data_dir()
    raw = spec.raw(root)
    with _writable(spec, root):
        raw.mkdir(parents=True, exist_ok=True)
        if os.environ.get(spec.mirror_env):
            _copy_from_mirror(spec, Path(os.environ[spec.mirror_env]).expanduser(), raw)
        _check_archives(spec, raw)
        _extract(spec, raw)
        if not all((raw / name.removesuffix(".gz")).exists() for name in spec.files()):
            _download(spec, root, raw, timeout)  # torchvision verifies the archives' MD5
            _extract(spec, raw)  # check what torchvision extracted, re-extract if needed
    return root


def ensure_mnist(root: Path | None = None, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Make sure MNIST is extracted under `root` (default: data_dir()) and verified; return root.

    Order: files already in `<root>/MNIST/raw`, then $DLBOOK_MNIST_MIRROR, then the internet
    (giving up after `timeout` seconds without an answer).
    """
    return ensure_dataset(MNIST_SPEC, root, timeout)


def ensure_fashion_mnist(root: Path | None = None, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Make sure Fashion-MNIST is extracted under `root` and verified; return root.

    Order: files already in `<root>/FashionMNIST/raw`, then $DLBOOK_FASHION_MNIST_MIRROR, then
    the internet (giving up after `timeout` seconds without an answer).
    """
    return ensure_dataset(FASHION_MNIST_SPEC, root, timeout)


def normalize(X: Tensor, spec: DatasetSpec = MNIST_SPEC) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28), standardized with the data set's mean and std."""
    return ((X.float() / 255.0 - spec.mean) / spec.std).unsqueeze(1)


def denormalize(X: Tensor, spec: DatasetSpec = MNIST_SPEC) -> Tensor:
    """Standardized images back to pixels in [0, 1] (same shape): the inverse of `normalize`."""
    return (X * spec.std + spec.mean).clamp(0, 1)


@dataclass(frozen=True)
class MNISTSplits:
    """Normalized tensors: train (55k), val (5k, the last training images), test (10k).

    MNIST's, or Fashion-MNIST's (`load_fashion_mnist`): both are split the same way.
    """

    X_train: Tensor  # (55000, 1, 28, 28)
    y_train: Tensor  # (55000,)
    X_val: Tensor  # (5000, 1, 28, 28)
    y_val: Tensor  # (5000,)
    X_test: Tensor  # (10000, 1, 28, 28)
    y_test: Tensor  # (10000,)

    def subset(self, n_train: int, n_eval: int) -> MNISTSplits:
        """The first n_train training and n_eval validation/test images (for smoke runs)."""
        return MNISTSplits(
            self.X_train[:n_train],
            self.y_train[:n_train],
            self.X_val[:n_eval],
            self.y_val[:n_eval],
            self.X_test[:n_eval],
            self.y_test[:n_eval],
        )

    def smoke(self) -> MNISTSplits:
        """The smoke-run subset every chapter uses: SMOKE_SIZES images from each split."""
        return self.subset(*SMOKE_SIZES)

    def first_train(self, n: int) -> MNISTSplits:
        """The same splits with only the first n training images (validation and test unchanged)."""
        return dataclasses.replace(self, X_train=self.X_train[:n], y_train=self.y_train[:n])

    def map_images(self, fn: Callable[[Tensor], Tensor]) -> MNISTSplits:
        """The same splits with fn applied to every image tensor (labels unchanged)."""
        return dataclasses.replace(
            self, X_train=fn(self.X_train), X_val=fn(self.X_val), X_test=fn(self.X_test)
        )


def _read_split(spec: DatasetSpec, root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of one official split."""
    raw = spec.raw(root)
    try:
        ds = spec.source(str(root), train=train, download=False)
    except Exception as err:  # a truncated idx file fails inside torchvision's parser
        raise DataError(
            f"could not read {spec.title} under {raw} ({err}). Delete the "
            "extracted *-ubyte files there and run again to re-extract them."
        ) from None
    if ds.data.shape[1:] != (28, 28) or not bool(((ds.targets >= 0) & (ds.targets <= 9)).all()):
        raise DataError(
            f"{spec.title} under {raw} is not 28x28 images labelled 0-9: delete "
            "the extracted *-ubyte files there and run again to re-extract them."
        )
    return ds.data, ds.targets


def load_dataset(
    spec: DatasetSpec, device: torch.device | str = "cpu", root: Path | None = None
) -> MNISTSplits:
    """`spec`'s whole data set as normalized tensors on `device`, split like MNIST's."""
    root = ensure_dataset(spec, root)
    X, y = _read_split(spec, root, train=True)
    X_test, y_test = _read_split(spec, root, train=False)
    X, X_test = normalize(X, spec).to(device), normalize(X_test, spec).to(device)
    y, y_test = y.to(device), y_test.to(device)
    n = len(X) - NUM_VAL
    return MNISTSplits(X[:n], y[:n], X[n:], y[n:], X_test, y_test)


def load_mnist(device: torch.device | str = "cpu", root: Path | None = None) -> MNISTSplits:
    """The whole of MNIST as normalized tensors on `device`, with the fixed validation split."""
    return load_dataset(MNIST_SPEC, device, root)


def load_fashion_mnist(device: torch.device | str = "cpu", root: Path | None = None) -> MNISTSplits:
    """The whole of Fashion-MNIST as normalized tensors on `device`, split like MNIST."""
    return load_dataset(FASHION_MNIST_SPEC, device, root)


def iterate_batches(
    X: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (X_batch, y_batch) slices of preloaded tensors; shuffled by a seeded generator."""
    n = len(X)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(X.device)
    for start in range(0, n, batch_size):
        if shuffle:
            idx = order[start : start + batch_size]
            yield X[idx], y[idx]
        else:
            yield X[start : start + batch_size], y[start : start + batch_size]


def per_sample_loader(
    train: bool = True,
    batch_size: int = 64,
    shuffle: bool = True,
    root: Path | None = None,
    normalize_input: bool = False,
    num_workers: int = 0,
) -> DataLoader:
    """The seed program's pipeline: a DataLoader converting one PIL image at a time (ToTensor)."""
    root = ensure_mnist(root)
    steps = [transforms.ToTensor()]
    if normalize_input:
        steps.append(transforms.Normalize((MNIST_MEAN,), (MNIST_STD,)))
    ds = datasets.MNIST(root, train=train, download=False, transform=transforms.Compose(steps))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers)
