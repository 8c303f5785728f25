"""Fashion-MNIST: found offline like MNIST, verified by MD5, nothing half-written."""

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch
from torchvision import datasets

import dlbook as dl
from conftest import FASHION_ARCHIVES, seed_root
from dlbook.data import FASHION_MNIST_SPEC, MNIST_SPEC, NUM_VAL, DataError, normalize
from dlbook.runtime import file_digest

ENV = "DLBOOK_FASHION_MNIST_MIRROR"
SPECS = {"mnist": MNIST_SPEC, "fashion": FASHION_MNIST_SPEC}  # fixture prefix -> data set


class Killed(BaseException):
    """What a process killed halfway through a write would see (nothing catches it)."""


def test_loads_offline_from_its_mirror(tmp_path, monkeypatch, fashion_archives):
    monkeypatch.setenv("DLBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(ENV, str(fashion_archives))
    data = dl.load_fashion_mnist("cpu")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    idx = [name.removesuffix(".gz") for name in FASHION_ARCHIVES]
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_ARCHIVES + idx)
    assert not (tmp_path / "data" / "MNIST").exists()  # MNIST's folder is left alone
    assert data.X_train.shape == (60_000 - NUM_VAL, 1, 28, 28) and data.y_val.shape == (NUM_VAL,)
    assert data.X_test.shape == (10_000, 1, 28, 28) and data.y_test.shape == (10_000,)
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64


def test_every_class_has_its_official_count(fashion):
    train_labels = torch.cat([fashion.y_train, fashion.y_val])  # all 60,000 training labels
    assert torch.bincount(train_labels).tolist() == [6_000] * 10
    assert torch.bincount(fashion.y_test).tolist() == [1_000] * 10


def test_splits_are_torchvisions_images_and_labels(fashion, fashion_root):
    test = datasets.FashionMNIST(fashion_root, train=False)
    assert torch.equal(fashion.y_test, test.targets)
    assert torch.equal(fashion.X_test, normalize(test.data, FASHION_MNIST_SPEC))
    train = datasets.FashionMNIST(fashion_root, train=True)
    assert torch.equal(fashion.y_val, train.targets[-NUM_VAL:])  # the last 5,000, as for MNIST
    assert torch.equal(fashion.X_train[:100], normalize(train.data[:100], FASHION_MNIST_SPEC))


def test_class_names_are_torchvisions():
    assert tuple(datasets.FashionMNIST.classes) == dl.FASHION_CLASSES
    assert FASHION_MNIST_SPEC.classes == dl.FASHION_CLASSES and len(dl.FASHION_CLASSES) == 10


@pytest.mark.parametrize("prefix", SPECS)
def test_mean_and_std_constants_are_the_training_sets(prefix, request):
    spec = SPECS[prefix]
    root = dl.data.ensure_dataset(spec, request.getfixturevalue(f"{prefix}_root"))
    pixels = spec.source(root, train=True).data.double() / 255  # all 60,000 training images
    assert len(pixels) == 60_000
    assert spec.mean == pytest.approx(pixels.mean().item(), abs=5e-5)  # 4 decimals
    assert spec.std == pytest.approx(pixels.std().item(), abs=5e-5)
    back = dl.denormalize(normalize(pixels[:10].mul(255).round().byte(), spec), spec)
    torch.testing.assert_close(back[:, 0].double(), pixels[:10], atol=1e-6, rtol=0)


@pytest.mark.parametrize("prefix", SPECS)
def test_md5_sums_are_those_of_the_verified_archives(prefix, request):
    spec, archives = SPECS[prefix], request.getfixturevalue(f"{prefix}_archives")
    assert spec.files() == dict(spec.source.resources)  # torchvision's sums for the archives
    for name, md5 in spec.files().items():
        assert file_digest(archives / name, "md5") == md5
        with gzip.open(archives / name) as f:
            extracted = hashlib.md5(f.read()).hexdigest()
        assert spec.extracted_md5[name.removesuffix(".gz")] == extracted


def _mirror(tmp_path: Path, archives: Path, skip: str = "", truncate: str = "") -> Path:
    """A mirror folder with the official archives, but `skip`, and `truncate` cut short."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in FASHION_ARCHIVES:
        if name != skip:
            shutil.copyfile(archives / name, mirror / name)
    if truncate:
        with open(mirror / truncate, "r+b") as f:
            f.truncate(1000)
    return mirror


def test_a_corrupted_mirror_file_is_refused_and_named(tmp_path, monkeypatch, fashion_archives):
    victim = FASHION_ARCHIVES[-1]  # copied last: the three before it are copied whole
    monkeypatch.setenv(ENV, str(_mirror(tmp_path, fashion_archives, truncate=victim)))
    with pytest.raises(
        DataError, match=rf"corrupted Fashion-MNIST file in the mirror: .*{victim} "
    ):
        dl.ensure_fashion_mnist(tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_ARCHIVES[:-1])  # no .part
    for name in FASHION_ARCHIVES[:-1]:
        assert file_digest(raw / name, "md5") == FASHION_MNIST_SPEC.files()[name]


def test_mnist_archives_are_not_taken_for_fashion_mnist(tmp_path, monkeypatch, mnist_archives):
    monkeypatch.setenv(ENV, str(mnist_archives))  # the same file names, other contents
    with pytest.raises(DataError, match="corrupted Fashion-MNIST file in the mirror: .*MD5"):
        dl.ensure_fashion_mnist(tmp_path)
    assert not list((tmp_path / "FashionMNIST" / "raw").iterdir())


def test_a_corrupted_file_in_the_data_folder_is_named(tmp_path, monkeypatch, fashion_archives):
    monkeypatch.delenv(ENV, raising=False)
    raw = seed_root(tmp_path, "FashionMNIST", fashion_archives) / "FashionMNIST" / "raw"
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not fashion"))
    with pytest.raises(DataError, match="corrupted Fashion-MNIST file: .*train-labels.*Delete it"):
        dl.load_fashion_mnist("cpu", root=tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_ARCHIVES)  # nothing extracted


def test_a_mirror_missing_a_file_is_named(tmp_path, monkeypatch, fashion_archives):
    missing = FASHION_ARCHIVES[1]
    mirror = _mirror(tmp_path, fashion_archives, skip=missing)
    monkeypatch.setenv(ENV, str(mirror))
    with pytest.raises(DataError) as err:
        dl.ensure_fashion_mnist(tmp_path / "data")
    assert f"{ENV}={mirror} lacks {missing}: copy the official files there" in str(err.value)
    assert f"set {ENV}=<folder" not in str(err.value)  # it is set already
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not (raw / missing).exists() and not list(raw.glob("*.part"))


def test_no_data_and_no_network_names_its_own_variable(tmp_path, monkeypatch, mnist_archives):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", str(mnist_archives))  # MNIST's mirror is not used
    with pytest.raises(DataError) as err:
        dl.ensure_fashion_mnist(tmp_path)
    message = str(err.value)
    assert "Fashion-MNIST is not in" in message and "connect to the internet" in message
    assert f"set {ENV}=<folder" in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert not (tmp_path / "MNIST").exists()


def test_a_mirror_that_is_not_a_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"{ENV}=.*nowhere is not a folder; .*Fashion-MNIST .gz"):
        dl.ensure_fashion_mnist(tmp_path / "data")


def test_a_copy_killed_halfway_leaves_no_file(tmp_path, monkeypatch, fashion_archives):
    monkeypatch.setenv(ENV, str(fashion_archives))

    def killed(source, target):
        Path(target).write_bytes(Path(source).read_bytes()[:1000])
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfile", killed)
        with pytest.raises(Killed):
            dl.ensure_fashion_mnist(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert not list(raw.iterdir())  # neither a short archive nor a .part file
    dl.ensure_fashion_mnist(tmp_path)  # the next run completes
    assert len(list(raw.iterdir())) == 8


def test_an_extraction_killed_halfway_leaves_no_file(tmp_path, monkeypatch, fashion_archives):
    monkeypatch.delenv(ENV, raising=False)
    raw = seed_root(tmp_path, "FashionMNIST", fashion_archives) / "FashionMNIST" / "raw"

    def killed(source, target):
        target.write(source.read(1000))
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copyfileobj", killed)
        with pytest.raises(Killed):
            dl.ensure_fashion_mnist(tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_ARCHIVES)  # no idx, no .part
    dl.ensure_fashion_mnist(tmp_path)
    for name, md5 in FASHION_MNIST_SPEC.extracted_md5.items():
        assert file_digest(raw / name, "md5") == md5
