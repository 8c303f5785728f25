"""Encryption at rest for the model package: AES-256-GCM, decrypted in memory only.

python -m dlbook.vault keygen  --out model.key
python -m dlbook.vault encrypt --model <package> --out <package>.enc [--key-file model.key]
python -m dlbook.vault decrypt --model <package>.enc --out <folder> [--key-file model.key]
python -m dlbook.vault verify  --model <package>.enc [--key-file model.key]

The key is 32 random bytes, read from a file (64 hex digits, or the raw bytes; readable by its
owner only) or from the environment variable DLBOOK_MODEL_KEY (64 hex digits), never from the
package or a command line.

An encrypted package is a folder with model.safetensors.enc and model.json.enc. Each file is

    magic "DLBVAULT" | version (1 byte) | package id (16) | key check (32) | nonce (12)
    | plaintext length (8, big-endian) | AES-256-GCM ciphertext | tag (16)

The package id is random per encryption and shared by the package's files; HKDF-SHA256 of the key
with it as salt gives the AES key and the key check. The header and the file's plaintext name are
the cipher's associated data, so a file renamed, swapped with its sibling, moved to another
package, cut short or with any byte changed fails authentication. The key check tells a wrong
key apart from a modified file (GCM alone cannot), and the declared length names truncation.
"""

from __future__ import annotations

import hmac
import os
import stat
import struct
import sys
from pathlib import Path

import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from torch import nn

from .checkpoint import CheckpointError
from .cli import parser_for
from .package import ENCRYPTED, FILES, is_encrypted, load_package, load_package_bytes

KEY_ENV = "DLBOOK_MODEL_KEY"
KEY_BYTES = 32  # AES-256
MAGIC = b"DLBVAULT"
VERSION = 1
HEADER = struct.Struct(">8sB16s32s12sQ")  # magic, version, package id, key check, nonce, length
TAG_BYTES = 16


class VaultError(CheckpointError):
    """A key or an encrypted package is unusable; the message names the cause."""


def parse_key(data: bytes, where: str) -> bytes:
    """A 256-bit key from 64 hex digits (surrounding whitespace ignored) or 32 raw bytes."""
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if len(data) == KEY_BYTES:
        return data
    raise VaultError(
        f"{where} holds {len(data)} bytes: a key is {2 * KEY_BYTES} hex digits "
        f"or {KEY_BYTES} raw bytes (make one with python -m dlbook.vault keygen)"
    )


def read_key_file(path: Path) -> bytes:
    """The key in `path`; VaultError if it is missing, readable by others, or malformed."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise VaultError(f"key file {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise VaultError(
                f"key file {path} is open to other users (mode {stat.filemode(info.st_mode)}): "
                f"chmod 600 {path}"
            )
        data = path.read_bytes()
    except OSError as err:
        raise VaultError(f"cannot read key file {path}: {err.strerror}") from None
    return parse_key(data, f"key file {path}")


def key_from_env() -> bytes | None:
    """The key in $DLBOOK_MODEL_KEY (64 hex digits), or None if it is not set."""
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    try:
        key = bytes.fromhex(value.strip())
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:  # never echo the value: it may be a key with a typo
        raise VaultError(f"{KEY_ENV} must hold {2 * KEY_BYTES} hex digits (a 256-bit key)")
    return key


def package_key(folder: Path, key_file: Path | None) -> bytes | None:
    """The key for `folder`: from `key_file` if given, else from $DLBOOK_MODEL_KEY if the
    package is encrypted, else None."""
    if key_file is not None:
        return read_key_file(key_file)
    return key_from_env() if is_encrypted(folder) else None


def write_key(path: Path) -> Path:
    """A new random key as 64 hex digits in a new file readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise VaultError(f"{path} exists: refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(KEY_BYTES).hex() + "\n")
    return path


def _derive(key: bytes, package_id: bytes) -> tuple[bytes, bytes]:
    """(AES-256 key, key check) for one package, by HKDF-SHA256 with the package id as salt."""
    if len(key) != KEY_BYTES:
        raise VaultError(f"a key is {KEY_BYTES} bytes; got {len(key)}")
    okm = HKDF(hashes.SHA256(), 2 * KEY_BYTES, package_id, b"dlbook-vault/1").derive(key)
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


def seal(name: str, plaintext: bytes, key: bytes, package_id: bytes) -> bytes:
    """One file of an encrypted package: header, then ciphertext and tag bound to `name`."""
    aes_key, check = _derive(key, package_id)
    nonce = os.urandom(12)  # random: two files per package id, each with its own nonce
    header = HEADER.pack(MAGIC, VERSION, package_id, check, nonce, len(plaintext))
    return header + AESGCM(aes_key).encrypt(nonce, plaintext, header + name.encode())


def _header(blob: bytes, where: str) -> tuple[int, bytes, bytes, bytes, int]:
    """(version, package id, key check, nonce, length) of a sealed file, checked for shape."""
    if not blob.startswith(MAGIC):
        if MAGIC.startswith(blob):  # empty, or cut inside the magic
            raise VaultError(f"{where} is truncated: {len(blob)} bytes")
        raise VaultError(f"{where} is not an encrypted dlbook package file (no {MAGIC!r} magic)")
    if len(blob) < HEADER.size + TAG_BYTES:
        raise VaultError(f"{where} is truncated: {len(blob)} bytes, less than a header and tag")
    _, version, package_id, check, nonce, length = HEADER.unpack_from(blob)
    if version != VERSION:
        raise VaultError(f"{where} has format version {version}; this dlbook reads {VERSION}")
    expected = HEADER.size + length + TAG_BYTES
    if len(blob) != expected:
        change = "truncated" if len(blob) < expected else "extended"
        raise VaultError(
            f"{where} holds {len(blob):,} bytes but its header declares {expected:,}: "
            f"the file was {change} (or its header modified)"
        )
    return version, package_id, check, nonce, length


def unseal(name: str, blob: bytes, key: bytes, where: str) -> bytes:
    """The plaintext of one sealed file; VaultError naming what is wrong with it."""
    _, package_id, check, nonce, _ = _header(blob, where)
    aes_key, expected_check = _derive(key, package_id)
    if not hmac.compare_digest(check, expected_check):
        raise VaultError(
            f"wrong key for {where}: the package was encrypted with another key "
            "(or the file's header was modified)"
        )
    header = blob[: HEADER.size]
    try:
        return AESGCM(aes_key).decrypt(nonce, blob[HEADER.size :], header + name.encode())
    except InvalidTag:
        raise VaultError(
            f"{where} fails authentication: the key is right, so the file was modified "
            "after encryption (or renamed); refusing to load it"
        ) from None


def decrypt_files(folder: Path, key: bytes) -> dict[str, bytes]:
    """The package's plaintext files, in memory: FILES -> bytes; VaultError naming the cause."""
    blobs = {}
    for name in FILES:
        path = folder / f"{name}{ENCRYPTED}"
        try:
            blobs[name] = path.read_bytes()
        except OSError as err:
            raise VaultError(f"cannot read {path}: {err.strerror}") from None
    ids = {_header(blob, str(folder / f"{n}{ENCRYPTED}"))[1] for n, blob in blobs.items()}
    if len(ids) > 1:
        raise VaultError(
            f"the files in {folder} come from different encryptions (their package ids "
            "differ): one was replaced, or its header modified"
        )
    return {n: unseal(n, blob, key, str(folder / f"{n}{ENCRYPTED}")) for n, blob in blobs.items()}


def open_package(
    folder: Path | str, key: bytes | None, device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict]:
    """`load_package` for a plain or an encrypted package (decrypted in memory, with `key`)."""
    folder = Path(folder)
    if not is_encrypted(folder):
        if key is not None:
            raise VaultError(f"{folder} is not an encrypted package, yet a key was given")
        return load_package(folder, device)
    if key is None:
        raise VaultError(
            f"{folder} is encrypted: give its key (--key-file, or {KEY_ENV} in the environment)"
        )
    return load_package_bytes(decrypt_files(folder, key), str(folder), device)


def _write_new(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, through a temporary name and a rename."""
    part = path.with_name(path.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(part, path)


def _new_folder(path: Path) -> Path:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise VaultError(f"{path} exists and is not an empty folder: refusing to write there")
    path.mkdir(parents=True, exist_ok=True)
    return path


def encrypt_package(src: Path, dst: Path, key: bytes) -> Path:
    """Encrypt the plain package `src` (verified first) into the new folder `dst`."""
    load_package(src)  # a damaged package is refused, not sealed
    package_id = os.urandom(16)
    sealed = {n: seal(n, (src / n).read_bytes(), key, package_id) for n in FILES}
    _new_folder(dst)
    for name, blob in sealed.items():
        _write_new(dst / f"{name}{ENCRYPTED}", blob)
    open_package(dst, key)  # what was written decrypts and loads
    return dst


def decrypt_package(src: Path, dst: Path, key: bytes) -> Path:
    """Write the plain package of the encrypted `src` (verified first) into the new folder."""
    files = decrypt_files(src, key)
    load_package_bytes(files, str(src))
    _new_folder(dst)
    for name, data in files.items():
        _write_new(dst / name, data)
    return dst


def main(argv: list[str] | None = None) -> int:
    """keygen, encrypt, decrypt or verify; exit status 2 with one line on any problem."""
    parser = parser_for("dlbook.vault", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write a new random key to a new file (mode 600)")
    keygen.add_argument("--out", type=Path, required=True)
    for name, text in [
        ("encrypt", "encrypt a package folder into a new folder"),
        ("decrypt", "write the plain package into a new folder"),
        ("verify", "decrypt in memory and load the package, writing nothing"),
    ]:
        command = commands.add_parser(name, help=text)
        command.add_argument("--model", type=Path, required=True, help="the package folder")
        if name != "verify":
            command.add_argument("--out", type=Path, required=True, help="a new folder")
        command.add_argument("--key-file", type=Path, help=f"the key (default: ${KEY_ENV})")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(f"wrote a new key to {write_key(args.out)}", file=sys.stderr)
            return 0
        key = read_key_file(args.key_file) if args.key_file else key_from_env()
        if key is None:
            parser.error(f"give --key-file, or set {KEY_ENV}")
        if args.command == "encrypt":
            encrypt_package(args.model, args.out, key)
        elif args.command == "decrypt":
            decrypt_package(args.model, args.out, key)
        else:
            open_package(args.model, key)
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    done = {"encrypt": "encrypted", "decrypt": "decrypted", "verify": "verified"}[args.command]
    print(f"{done} {args.model}" + (f" into {args.out}" if "out" in args else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
