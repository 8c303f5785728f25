"""Homomorphic inference with TenSEAL's CKKS: the server classifies images it cannot read.

The model is small enough for it: 2x2 average pooling (196 inputs), a linear layer, x**2 (a
polynomial, which CKKS can evaluate; ReLU it cannot), a linear layer. Images are packed across
the ciphertext's slots as CryptoNets did (Gilad-Bachrach et al. 2016): ciphertext i holds pixel i
of up to `slots` images, so each layer is plaintext-scalar multiplications and additions of
ciphertexts, with no rotations, and one pass classifies the whole batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .timing import median_latency

POLY_MODULUS_DEGREE = 8192  # 4,096 slots; 218 bits of modulus at 128-bit security
COEFF_MOD_BIT_SIZES = (50, 35, 35, 35, 50)  # three 35-bit levels: x @ W1, square, h @ W2
SCALE_BITS = 35  # precision of the encoded numbers; 50 - 35 = 15 bits above it for the result


class Square(nn.Module):
    """x ** 2, the activation a CKKS circuit can compute (one multiplication)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * x


class SquareNet(nn.Module):
    """(B, 1, 28, 28) -> 2x2 average pool (B, 196) -> Linear -> x**2 -> Linear -> (B, 10)."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.pool = nn.Sequential(nn.AvgPool2d(2), nn.Flatten())  # (B, 196)
        self.fc1, self.act, self.fc2 = nn.Linear(196, hidden), Square(), nn.Linear(hidden, 10)

    def forward(self, X: Tensor) -> Tensor:
        """Logits (B, 10) of images (B, 1, 28, 28)."""
        return self.head(self.pool(X))

    def head(self, x: Tensor) -> Tensor:
        """The part computed on ciphertexts: (B, 196) -> (B, 10)."""
        return self.fc2(self.act(self.fc1(x)))


def context(poly_modulus_degree: int = POLY_MODULUS_DEGREE):  # -> tenseal.Context
    """A CKKS context with the secret key (the client's); its public part is what a server needs."""
    import tenseal as ts

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES)
    )
    ctx.global_scale = 2.0**SCALE_BITS
    return ctx


def encrypt_columns(ctx, x: Tensor) -> list:
    """Client: (B, D) -> D ciphertexts, the i-th holding feature i of all B examples."""
    import tenseal as ts

    return [ts.ckks_vector(ctx, column.tolist()) for column in x.double().T]


def _linear(columns: Sequence, weight: Tensor, bias: Tensor) -> list:
    """Server: out_j = sum_i W[j, i] * column_i + b_j, on ciphertexts (plaintext weights)."""
    out = []
    for w_j, b_j in zip(weight.double().tolist(), bias.double().tolist(), strict=True):
        acc = columns[0] * w_j[0]
        for column, w in zip(columns[1:], w_j[1:], strict=True):
            acc += column * w
        out.append(acc + b_j)
    return out


def encrypted_head(model: SquareNet, columns: Sequence) -> list:
    """Server: the model's head on encrypted columns; returns 10 ciphertexts of logits."""
    hidden = _linear(columns, model.fc1.weight.detach(), model.fc1.bias.detach())
    hidden = [h.square() for h in hidden]
    return _linear(hidden, model.fc2.weight.detach(), model.fc2.bias.detach())


def decrypt_columns(columns: Sequence) -> Tensor:
    """Client: 10 ciphertexts -> logits (B, 10)."""
    return torch.tensor([c.decrypt() for c in columns], dtype=torch.float64).T


@dataclass(frozen=True)
class HEResult:
    """Encrypted and plaintext logits of one batch, and the time of each step."""

    logits: Tensor  # (B, 10) decrypted
    plain_logits: Tensor  # (B, 10) the same model in plaintext
    encrypt_s: float
    compute_s: float
    decrypt_s: float
    plain_s: float  # the plaintext forward of the same batch (median of 11)

    @property
    def total_s(self) -> float:
        return self.encrypt_s + self.compute_s + self.decrypt_s


@torch.inference_mode()
def classify_encrypted(model: SquareNet, X: Tensor, ctx=None) -> HEResult:
    """Encrypt the pooled images X (B, 1, 28, 28), classify them on ciphertexts, decrypt;
    and the plaintext forward of the same model on the same batch, timed alike."""
    ctx = ctx if ctx is not None else context()
    model = model.cpu().eval()
    x = model.pool(X.cpu())  # (B, 196): pooling is the client's preprocessing
    if len(x) > POLY_MODULUS_DEGREE // 2:
        raise ValueError(f"one pass holds {POLY_MODULUS_DEGREE // 2} images; got {len(x)}")
    plain = model.head(x).double()
    plain_s = median_latency(lambda: model.head(x), warmup=3, repeats=11)
    tic = time.perf_counter()
    columns = encrypt_columns(ctx, x)
    encrypt_s = time.perf_counter() - tic
    tic = time.perf_counter()
    out = encrypted_head(model, columns)
    compute_s = time.perf_counter() - tic
    tic = time.perf_counter()
    logits = decrypt_columns(out)
    return HEResult(logits, plain, encrypt_s, compute_s, time.perf_counter() - tic, plain_s)
