"""dlbook.vault: the model package encrypted at rest, with a clear error for every bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import dlbook as dl
from dlbook import vault
from dlbook.checkpoint import CheckpointError
from dlbook.package import FILES, load_package, model_card, save_package
from dlbook.vault import HEADER, VaultError

ENC = [f"{name}.enc" for name in FILES]


@pytest.fixture
def plain(tmp_path) -> Path:
    """A small (untrained) MLP package."""
    torch.manual_seed(0)
    model = dl.MLP(hidden=16)
    card = model_card(model, dl.Recipe("mlp", {"hidden": 16}), {"test_acc": 0.9}, "1.0.0")
    return save_package(tmp_path / "pkg", model, card)


@pytest.fixture
def key() -> bytes:
    return os.urandom(vault.KEY_BYTES)


@pytest.fixture
def sealed(plain, key, tmp_path) -> Path:
    return vault.encrypt_package(plain, tmp_path / "pkg.enc", key)


def _listing(folder: Path) -> dict[str, int]:
    """Every file under `folder`, with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_round_trip_in_memory(plain, sealed, key):
    model, card = vault.open_package(sealed, key)
    reference, expected = load_package(plain)
    X = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(X), reference(X)) and card == expected
    assert sorted(_listing(sealed)) == sorted(ENC)  # nothing else written beside the package


def test_the_files_hold_no_plaintext(plain, sealed):
    for name in FILES:
        blob = (sealed / f"{name}.enc").read_bytes()
        assert blob.startswith(vault.MAGIC)
        assert (plain / name).read_bytes()[:64] not in blob
        assert b"dlbook-mnist-mlp" not in blob and b"model.fc" not in blob


def test_loading_writes_nothing(sealed, key, tmp_path):
    before = _listing(tmp_path)
    vault.open_package(sealed, key)
    assert _listing(tmp_path) == before


def test_decrypt_writes_the_same_package(plain, sealed, key, tmp_path):
    out = vault.decrypt_package(sealed, tmp_path / "out", key)
    for name in FILES:
        assert (out / name).read_bytes() == (plain / name).read_bytes()
        assert (out / name).stat().st_mode & 0o077 == 0


def test_wrong_key_is_named(sealed):
    with pytest.raises(VaultError, match="wrong key for .*model.safetensors.enc"):
        vault.open_package(sealed, os.urandom(32))


# One byte flipped in each part of a file -> what the error names.
REGIONS = {
    "magic": (0, "not an encrypted dlbook package file"),
    "version": (8, "format version"),
    "package id": (9, "come from different encryptions"),
    "key check": (25, "wrong key"),
    "nonce": (57, "fails authentication"),
    "length": (HEADER.size - 1, "but its header declares"),
    "ciphertext": (HEADER.size + 5, "fails authentication: the key is right"),
    "tag": (-1, "fails authentication"),
}


@pytest.mark.parametrize("name", ENC)
@pytest.mark.parametrize("region", list(REGIONS))
def test_a_flipped_byte_is_refused(sealed, key, name, region):
    offset, words = REGIONS[region]
    blob = bytearray((sealed / name).read_bytes())
    blob[offset] ^= 0x01
    (sealed / name).write_bytes(blob)
    with pytest.raises(VaultError, match=words):
        vault.open_package(sealed, key)


@pytest.mark.parametrize("name", ENC)
@pytest.mark.parametrize(
    "size, words",
    [
        (0, "is truncated: 0 bytes"),
        (5, "is truncated: 5 bytes"),
        (HEADER.size, "less than a header and tag"),
        (-1, "was truncated"),
    ],
)
def test_a_truncated_file_is_named(sealed, key, name, size, words):
    path = sealed / name
    data = path.read_bytes()
    path.write_bytes(data[: size if size >= 0 else len(data) + size])
    with pytest.raises(VaultError, match=words):
        vault.open_package(sealed, key)


def test_appended_bytes_are_named(sealed, key):
    with (sealed / ENC[1]).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(VaultError, match="was extended"):
        vault.open_package(sealed, key)


def test_swapped_files_fail_authentication(sealed, key):
    a, b = (sealed / name for name in ENC)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(VaultError, match="fails authentication.*or renamed"):
        vault.open_package(sealed, key)


def test_a_file_from_another_encryption_is_refused(plain, sealed, key, tmp_path):
    again = vault.encrypt_package(plain, tmp_path / "again", key)
    shutil.copyfile(again / ENC[1], sealed / ENC[1])
    with pytest.raises(VaultError, match="different encryptions"):
        vault.open_package(sealed, key)


def test_not_an_encrypted_file(sealed, key):
    (sealed / ENC[0]).write_bytes(b"PK\x03\x04 a zip, say" + bytes(200))
    with pytest.raises(VaultError, match="not an encrypted dlbook package file"):
        vault.open_package(sealed, key)


def test_a_missing_file_is_named(sealed, key):
    (sealed / ENC[1]).unlink()
    with pytest.raises(VaultError, match=r"cannot read .*model\.json\.enc"):
        vault.open_package(sealed, key)


def test_keys_must_match_the_package_kind(plain, sealed, key):
    with pytest.raises(VaultError, match="is encrypted: give its key"):
        vault.open_package(sealed, None)
    with pytest.raises(VaultError, match="not an encrypted package, yet a key was given"):
        vault.open_package(plain, key)
    with pytest.raises(CheckpointError, match="holds an encrypted package"):
        load_package(sealed)


def test_a_damaged_package_is_not_encrypted(plain, key, tmp_path):
    (plain / FILES[0]).write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError):
        vault.encrypt_package(plain, tmp_path / "out", key)
    assert not (tmp_path / "out").exists()


def test_encrypt_and_decrypt_refuse_a_folder_in_use(plain, sealed, key):
    with pytest.raises(VaultError, match="not an empty folder"):
        vault.encrypt_package(plain, sealed, key)
    with pytest.raises(VaultError, match="not an empty folder"):
        vault.decrypt_package(sealed, plain, key)


# Keys: files and the environment.


def _key_file(folder: Path, data: bytes, mode: int = 0o600) -> Path:
    path = folder / "model.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("form", ["hex", "hex with newline", "raw"])
def test_key_file_forms(tmp_path, key, form):
    data = {"hex": key.hex().encode(), "hex with newline": key.hex().encode() + b"\n", "raw": key}
    assert vault.read_key_file(_key_file(tmp_path, data[form])) == key


@pytest.mark.parametrize(
    "data, mode, words",
    [
        (b"abc", 0o600, "holds 3 bytes"),
        (b"z" * 64, 0o600, "holds 64 bytes: a key is 64 hex digits"),
        (bytes(33), 0o600, "holds 33 bytes"),
        (b"00" * 32, 0o644, r"open to other users \(mode -rw-r--r--\): chmod 600"),
        (b"00" * 32, 0o640, "open to other users"),
    ],
)
def test_bad_key_files(tmp_path, data, mode, words):
    with pytest.raises(VaultError, match=words):
        vault.read_key_file(_key_file(tmp_path, data, mode))


def test_missing_key_file_or_a_folder(tmp_path):
    with pytest.raises(VaultError, match="cannot read key file .*No such file"):
        vault.read_key_file(tmp_path / "nope")
    with pytest.raises(VaultError, match="not a regular file"):
        vault.read_key_file(tmp_path)


def test_key_from_the_environment(monkeypatch, key):
    monkeypatch.delenv(vault.KEY_ENV, raising=False)
    assert vault.key_from_env() is None
    monkeypatch.setenv(vault.KEY_ENV, f" {key.hex()}\n")
    assert vault.key_from_env() == key
    for bad in ["abc", "g" * 64, key.hex()[:-2]]:
        monkeypatch.setenv(vault.KEY_ENV, bad)
        with pytest.raises(VaultError, match="must hold 64 hex digits") as info:
            vault.key_from_env()
        assert bad not in str(info.value)  # a mistyped key is not echoed


def test_package_key_reads_the_environment_only_for_encrypted_packages(
    monkeypatch, plain, sealed, key
):
    monkeypatch.setenv(vault.KEY_ENV, "not a key")
    assert vault.package_key(plain, None) is None
    monkeypatch.setenv(vault.KEY_ENV, key.hex())
    assert vault.package_key(sealed, None) == key


def test_keygen_writes_an_owner_only_key_once(tmp_path):
    path = vault.write_key(tmp_path / "k")
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(vault.read_key_file(path)) == 32
    with pytest.raises(VaultError, match="refusing to overwrite"):
        vault.write_key(path)


def test_cli(tmp_path, plain, capsys, monkeypatch):
    monkeypatch.delenv(vault.KEY_ENV, raising=False)
    key_file, enc, out = tmp_path / "k", tmp_path / "enc", tmp_path / "out"
    assert vault.main(["keygen", "--out", str(key_file)]) == 0
    assert (
        vault.main(
            ["encrypt", "--model", str(plain), "--out", str(enc), "--key-file", str(key_file)]
        )
        == 0
    )
    assert vault.main(["verify", "--model", str(enc), "--key-file", str(key_file)]) == 0
    assert (
        vault.main(["decrypt", "--model", str(enc), "--out", str(out), "--key-file", str(key_file)])
        == 0
    )
    assert (out / FILES[0]).read_bytes() == (plain / FILES[0]).read_bytes()
    capsys.readouterr()
    monkeypatch.setenv(vault.KEY_ENV, os.urandom(32).hex())
    assert vault.main(["verify", "--model", str(enc)]) == 2
    assert capsys.readouterr().err.startswith("error: wrong key")
    monkeypatch.delenv(vault.KEY_ENV)
    with pytest.raises(SystemExit) as info:
        vault.main(["verify", "--model", str(enc)])
    assert info.value.code == 2 and "give --key-file" in capsys.readouterr().err
