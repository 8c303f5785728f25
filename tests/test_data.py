import gzip
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from torchvision import datasets

import dlbook as dl
from conftest import ARCHIVES
from dlbook.data import MNIST_MEAN, MNIST_STD, NUM_VAL, DataError, normalize


def test_splits_have_the_official_sizes_and_shapes(mnist):
    assert mnist.X_train.shape == (60_000 - NUM_VAL, 1, 28, 28)
    assert mnist.X_val.shape == (NUM_VAL, 1, 28, 28)
    assert mnist.X_test.shape == (10_000, 1, 28, 28)
    assert mnist.y_train.shape == (55_000,) and mnist.y_test.shape == (10_000,)
    assert mnist.X_train.dtype == torch.float32 and mnist.y_train.dtype == torch.int64
    assert set(mnist.y_test.unique().tolist()) == set(range(10))


def test_normalization_uses_the_training_statistics(mnist):
    X = torch.cat([mnist.X_train, mnist.X_val])  # all 60,000 training images
    assert abs(X.mean().item()) < 1e-3 and abs(X.std().item() - 1) < 1e-3
    pixels = X * MNIST_STD + MNIST_MEAN
    assert pixels.min().item() == pytest.approx(0, abs=1e-6)
    assert pixels.max().item() == pytest.approx(1, abs=1e-6)


def test_validation_split_is_the_last_training_images(mnist, mnist_root):
    from torchvision import datasets

    raw = datasets.MNIST(mnist_root, train=True)
    assert torch.equal(mnist.y_val, raw.targets[-NUM_VAL:])
    assert torch.equal(mnist.X_val, dl.data.normalize(raw.data[-NUM_VAL:]))


def test_loads_from_a_mirror_folder(tmp_path, monkeypatch, mnist_archives):
    monkeypatch.setenv("DLBOOK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", str(mnist_archives))
    root = dl.ensure_mnist()
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert root == tmp_path / "data"
    for name in ARCHIVES:
        assert (raw / name).is_file() and (raw / name.removesuffix(".gz")).is_file()
    assert not list(raw.glob("*.part"))


def _mirror_with_corrupt_file(tmp_path, mnist_archives, victim: str):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ARCHIVES:
        shutil.copyfile(mnist_archives / name, mirror / name)
    with open(mirror / victim, "r+b") as f:
        f.truncate(1000)
    return mirror


def test_corrupted_mirror_file_is_named_and_not_copied(tmp_path, monkeypatch, mnist_archives):
    victim = "t10k-labels-idx1-ubyte.gz"
    mirror = _mirror_with_corrupt_file(tmp_path, mnist_archives, victim)
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", str(mirror))
    with pytest.raises(DataError, match=f"corrupted MNIST file in the mirror: .*{victim}"):
        dl.ensure_mnist(tmp_path / "data")
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert not (raw / victim).exists() and not list(raw.glob("*.part"))
    assert (mirror / victim).stat().st_size == 1000  # the user's file is left as it was


def test_corrupted_file_in_the_data_folder_is_named(tmp_path, monkeypatch, mnist_archives):
    monkeypatch.delenv("DLBOOK_MNIST_MIRROR", raising=False)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ARCHIVES:
        shutil.copyfile(mnist_archives / name, raw / name)
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(DataError, match="corrupted MNIST file: .*train-labels-idx1-ubyte.gz"):
        dl.ensure_mnist(tmp_path)
    assert not (raw / "train-labels-idx1-ubyte").exists()  # nothing half-extracted


def _seeded(tmp_path, mnist_archives, skip: tuple[str, ...] = ()):
    """A data root whose raw/ holds the official archives (but `skip`), extracted."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ARCHIVES:
        if name not in skip:
            shutil.copyfile(mnist_archives / name, raw / name)
    return raw


def test_damaged_extracted_files_are_extracted_again(tmp_path, mnist_archives, mnist):
    raw = _seeded(tmp_path, mnist_archives)
    dl.ensure_mnist(tmp_path)
    with open(raw / "t10k-images-idx3-ubyte", "r+b") as f:
        f.truncate(5000)  # a truncated file
    labels = raw / "train-labels-idx1-ubyte"
    scrambled = bytearray(labels.read_bytes())
    scrambled[8:] = bytes(reversed(range(256))) * ((len(scrambled) - 8) // 256) + bytes(
        (len(scrambled) - 8) % 256
    )  # a valid header, labels out of range
    labels.write_bytes(bytes(scrambled))
    fresh = dl.load_mnist("cpu", root=tmp_path)  # both come back from the verified archives
    assert torch.equal(fresh.y_train, mnist.y_train) and torch.equal(fresh.X_test, mnist.X_test)


def test_damaged_extracted_file_without_its_archive_is_named(tmp_path, monkeypatch, mnist_archives):
    monkeypatch.delenv("DLBOOK_MNIST_MIRROR", raising=False)  # else the mirror restores it
    raw = _seeded(tmp_path, mnist_archives)
    dl.ensure_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:
        f.truncate(5000)
    with pytest.raises(DataError, match="corrupted MNIST file: .*t10k-labels-idx1-ubyte .*Delete"):
        dl.load_mnist("cpu", root=tmp_path)


def test_a_data_folder_that_cannot_be_written_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("DLBOOK_MNIST_MIRROR", raising=False)
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    with pytest.raises(DataError, match="cannot write MNIST under .*DLBOOK_DATA_DIR"):
        dl.ensure_mnist(not_a_folder)

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # a read-only folder (tests may run as root)
    with pytest.raises(DataError, match="cannot write MNIST .*Permission denied.*writable"):
        dl.ensure_mnist(tmp_path / "readonly")


def test_a_stalled_network_gives_up_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv("DLBOOK_MNIST_MIRROR", raising=False)
    with socket.socket() as server:  # accepts connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        monkeypatch.setattr(
            datasets.MNIST, "mirrors", [f"http://127.0.0.1:{server.getsockname()[1]}/"]
        )
        tic = time.perf_counter()
        with pytest.raises(DataError, match="stalled: no answer from the network for 0.5 s"):
            dl.ensure_mnist(tmp_path, timeout=0.5)
    assert time.perf_counter() - tic < 30
    assert socket.getdefaulttimeout() is None  # the process-wide default is restored


def test_a_mirror_missing_a_file_is_named(tmp_path, monkeypatch, mnist_archives):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ARCHIVES[:3]:
        shutil.copyfile(mnist_archives / name, mirror / name)
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", str(mirror))
    with pytest.raises(DataError) as err:
        dl.ensure_mnist(tmp_path / "data")
    assert f"DLBOOK_MNIST_MIRROR={mirror} lacks {ARCHIVES[3]}" in str(err.value)
    assert "set DLBOOK_MNIST_MIRROR=<folder" not in str(err.value)  # it is set already


def test_no_data_and_no_network_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv("DLBOOK_MNIST_MIRROR", raising=False)
    with pytest.raises(DataError) as err:
        dl.ensure_mnist(tmp_path)
    message = str(err.value)
    assert "could not be downloaded" in message and "connect to the internet" in message
    assert "DLBOOK_MNIST_MIRROR" in message and str(tmp_path / "MNIST" / "raw") in message
    assert not [p for p in (tmp_path / "MNIST" / "raw").glob("*") if p.stat().st_size == 0]


def test_mirror_that_is_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="is not a folder"):
        dl.ensure_mnist(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLBOOK_MNIST_MIRROR", "../shared/data/MNIST/raw")
    with pytest.raises(DataError, match="relative path .* give an absolute path"):
        dl.ensure_mnist(tmp_path / "data")


def test_shuffled_batches_cover_every_sample_once():
    X = torch.arange(10).float().view(10, 1)
    y = torch.arange(10)
    batches = list(dl.iterate_batches(X, y, 4, shuffle=True, seed=1))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(bx.view(-1).long(), by) for bx, by in batches)  # pairs stay aligned
    again = torch.cat([b[1] for b in dl.iterate_batches(X, y, 4, shuffle=True, seed=1)])
    assert torch.equal(seen, again)


def test_unshuffled_batches_keep_order(mnist):
    X, y = next(dl.iterate_batches(mnist.X_test, mnist.y_test, 256))
    assert X.shape == (256, 1, 28, 28) and torch.equal(y, mnist.y_test[:256])


def test_per_sample_loader_is_the_seed_pipeline(mnist_root, mnist):
    loader = dl.per_sample_loader(train=False, batch_size=64, shuffle=False, root=mnist_root)
    X, y = next(iter(loader))
    assert X.shape == (64, 1, 28, 28) and X.min() >= 0 and X.max() <= 1  # ToTensor: [0, 1]
    assert torch.allclose((X - MNIST_MEAN) / MNIST_STD, mnist.X_test[:64], atol=1e-5)
    assert torch.equal(y, mnist.y_test[:64])


def test_subset_for_smoke_runs(mnist):
    small = mnist.subset(100, 50)
    assert (len(small.X_train), len(small.X_val), len(small.X_test)) == (100, 50, 50)


def test_smoke_subset_is_one_rule_for_every_chapter(mnist):
    small = mnist.smoke()
    assert (len(small.X_train), len(small.X_val), len(small.X_test)) == (2_000, 1_000, 1_000)
    assert torch.equal(small.X_train, mnist.X_train[:2_000])


def test_first_train_keeps_validation_and_test(mnist):
    part = mnist.first_train(300)
    assert torch.equal(part.X_train, mnist.X_train[:300]) and torch.equal(
        part.y_train, mnist.y_train[:300]
    )
    assert part.X_val is mnist.X_val and part.X_test is mnist.X_test


def test_denormalize_inverts_normalize():
    pixels = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    back = dl.denormalize(normalize(pixels))  # (5, 1, 28, 28) in [0, 1]
    torch.testing.assert_close(back[:, 0], pixels.float() / 255, atol=1e-6, rtol=0)
    assert dl.denormalize(torch.tensor([-10.0, 10.0])).tolist() == [0.0, 1.0]  # clamped


def test_map_images_touches_images_only(mnist):
    small = mnist.smoke().map_images(lambda X: X * 0)
    assert small.X_train.abs().sum() == 0 and small.X_test.abs().sum() == 0
    assert torch.equal(small.y_test, mnist.y_test[:1_000])
