"""Sizing: parameter counts, training memory per parameter, training compute and GPU budgets.

The large models are built on PyTorch's `meta` device: every tensor has a shape and a dtype but
no storage, so GPT-2 medium is built, counted and even run forward and backward (for the FLOP
counter) in a fraction of a second, without weights or downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class TransformerSpec:
    """The published shape of a transformer language model."""

    name: str
    num_layers: int  # L: transformer blocks
    d_model: int  # d: width of the residual stream
    num_heads: int  # attention heads (they split d; the count does not change N)
    vocab_size: int  # V: rows of the token embedding
    context: int  # learned position embeddings (longest sequence)
    token_types: int = 0  # BERT's segment embeddings (sentence A/B)
    causal: bool = True  # True: decoder with a tied output layer (GPT); False: encoder (BERT)
    pooler: bool = False  # BERT's dense+tanh layer on the [CLS] token


# Published shapes: GPT-2 (Radford et al. 2019, table 2; vocabulary and context in section 2.3),
# BERT-base (Devlin et al. 2019, section 3; vocabulary and sizes of Google's released checkpoint).
GPT2_SMALL = TransformerSpec("GPT-2 small", 12, 768, 12, 50_257, 1_024)
GPT2_MEDIUM = TransformerSpec("GPT-2 medium", 24, 1_024, 16, 50_257, 1_024)
BERT_BASE = TransformerSpec(
    "BERT-base", 12, 768, 12, 30_522, 512, token_types=2, causal=False, pooler=True
)
SPECS = {"gpt2-small": GPT2_SMALL, "gpt2-medium": GPT2_MEDIUM, "bert-base": BERT_BASE}


class Block(nn.Module):
    """A transformer layer: self-attention and a 4d-wide MLP, each with residual and LayerNorm."""

    def __init__(self, d: int, num_heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, num_heads, batch_first=True)  # 4d² + 4d
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)  # 2d each
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))  # 8d² + 5d
        self.pre_norm = pre_norm  # GPT-2 normalizes before each sublayer, BERT after

    def forward(self, X: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, d) -> (B, T, d)."""
        if self.pre_norm:
            H = self.ln1(X)
            X = X + self.attn(H, H, H, attn_mask=mask, need_weights=False)[0]
            return X + self.mlp(self.ln2(X))
        X = self.ln1(X + self.attn(X, X, X, attn_mask=mask, need_weights=False)[0])
        return self.ln2(X + self.mlp(X))


class GPT2(nn.Module):
    """GPT-2: token and position embeddings, pre-norm blocks, final LayerNorm, tied output."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        d = spec.d_model
        self.wte = nn.Embedding(spec.vocab_size, d)  # V·d, shared with the output layer
        self.wpe = nn.Embedding(spec.context, d)
        self.blocks = nn.ModuleList(Block(d, spec.num_heads, True) for _ in range(spec.num_layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V)."""
        T = ids.shape[1]
        X = self.wte(ids) + self.wpe(torch.arange(T, device=ids.device))  # (B, T, d)
        mask = torch.full((T, T), float("-inf"), device=ids.device).triu(1)  # causal
        for block in self.blocks:
            X = block(X, mask)
        return self.ln_f(X) @ self.wte.weight.T  # tied: no separate V·d output matrix


class BERT(nn.Module):
    """BERT: token, position and segment embeddings with a LayerNorm, post-norm blocks, pooler."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        d = spec.d_model
        self.word = nn.Embedding(spec.vocab_size, d)
        self.position = nn.Embedding(spec.context, d)
        self.token_type = nn.Embedding(spec.token_types, d)
        self.ln = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(Block(d, spec.num_heads, False) for _ in range(spec.num_layers))
        self.pooler = nn.Linear(d, d) if spec.pooler else None

    def forward(self, ids: Tensor) -> Tensor:
        """Token ids (B, T) -> contextual vectors (B, T, d), or the pooled [CLS] vector (B, d)."""
        T = ids.shape[1]
        X = self.word(ids) + self.position(torch.arange(T, device=ids.device))  # (B, T, d)
        X = self.ln(X + self.token_type(torch.zeros_like(ids)))  # every token in segment A
        for block in self.blocks:
            X = block(X)
        return X if self.pooler is None else torch.tanh(self.pooler(X[:, 0]))  # (B, d)


def build_transformer(spec: TransformerSpec, device: str | torch.device = "meta") -> nn.Module:
    """The model of a spec, on the meta device by default (shapes only: no memory, no weights)."""
    with torch.device(device):
        return GPT2(spec) if spec.causal else BERT(spec)


# The top-level modules of GPT2 and BERT, named as a reader would call them.
PARTS = {
    "wte": "token embedding (tied output layer)",
    "wpe": "position embedding",
    "ln_f": "final LayerNorm",
    "word": "token embedding",
    "position": "position embedding",
    "token_type": "segment embedding",
    "ln": "embedding LayerNorm",
    "pooler": "pooler",
}


def parameter_part(name: str) -> str:
    """A parameter's name in a GPT2 or BERT -> the part of the model it belongs to."""
    if name.startswith("blocks."):
        kind = "attention" if ".attn." in name else "MLP" if ".mlp." in name else "LayerNorms"
        return "blocks: " + kind
    return PARTS[name.split(".")[0]]


def parameter_breakdown(model: nn.Module) -> pd.Series:
    """Parameters per part of a GPT2 or BERT (see `parameter_part`), largest first."""
    counts = pd.Series({name: p.numel() for name, p in model.named_parameters()})
    return counts.groupby(parameter_part).sum().sort_values(ascending=False, kind="stable")


def closed_form_params(spec: TransformerSpec) -> int:
    """The usual estimate N ≈ 12·L·d² + V·d (blocks plus token embedding; no biases or norms)."""
    return 12 * spec.num_layers * spec.d_model**2 + spec.vocab_size * spec.d_model


@dataclass(frozen=True)
class Regime:
    """Bytes per parameter that training (or inference) keeps in accelerator memory."""

    name: str
    weights: int  # the parameters the forward pass reads
    gradients: int  # one gradient per parameter
    optimizer: int  # Adam: first and second moments in fp32 (8); momentum: 4
    master: int = 0  # fp32 copy of the weights that mixed precision updates

    @property
    def total(self) -> int:
        """Bytes per parameter, activations not included."""
        return self.weights + self.gradients + self.optimizer + self.master


# Rajbhandari et al. (2020), section 3.1: mixed-precision Adam keeps 2 + 2 + 12 = 16 bytes.
REGIMES = (
    Regime("fp32 training, Adam", 4, 4, 8),
    Regime("mixed precision (bf16) training, Adam", 2, 2, 8, 4),
    Regime("fp32 training, SGD with momentum", 4, 4, 4),
    Regime("fp32 inference", 4, 0, 0),
    Regime("bf16 inference", 2, 0, 0),
    Regime("int8 inference", 1, 0, 0),
)


def regimes_table(regimes: tuple[Regime, ...] = REGIMES) -> pd.DataFrame:
    """One row per regime: bytes per parameter for weights, gradients, optimizer, master, total."""
    rows = [
        {
            "regime": r.name,
            "weights": r.weights,
            "gradients": r.gradients,
            "optimizer state": r.optimizer,
            "fp32 master copy": r.master,
            "total": r.total,
        }
        for r in regimes
    ]
    return pd.DataFrame(rows).set_index("regime")


def format_bytes(num_bytes: float) -> str:
    """1_640_000 -> '1.6 MB' (decimal units, as accelerator memory is sold)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes:.0f} B"


def memory_table(params: dict[str, int], regimes: tuple[Regime, ...] = REGIMES) -> pd.DataFrame:
    """Memory of weights and training state per model (rows) and regime (columns), as text."""
    return pd.DataFrame(
        {r.name: {name: format_bytes(n * r.total) for name, n in params.items()} for r in regimes}
    ).rename_axis("model")


def training_flops(num_params: int, num_examples: float) -> float:
    """The 6·N·D rule: 2N FLOPs per example forward, 4N backward (Kaplan et al. 2020)."""
    return 6.0 * num_params * num_examples


def _sum(out: Tensor) -> Tensor:
    return out.float().sum()


def count_training_flops(
    model: nn.Module, X: Tensor, loss_fn: Callable[[Tensor], Tensor] = _sum
) -> int:
    """FLOPs of one forward and backward pass on X, counted op by op (matmuls and convolutions)."""
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(X)).backward()
    return counter.get_total_flops()


@dataclass(frozen=True)
class Accelerator:
    """A GPU's dense bf16 peak and memory, from its datasheet."""

    name: str
    peak_flops: float  # FLOP/s, dense bf16 tensor cores
    memory_bytes: float
    source: str


# Datasheet peaks are for dense matrices; the larger numbers printed beside them assume 2:4
# structured sparsity, which training does not use.
H100 = Accelerator("H100 SXM", 989e12, 80e9, "NVIDIA H100 datasheet: 1,979 TFLOPS with sparsity")
A100 = Accelerator("A100 SXM", 312e12, 80e9, "NVIDIA A100 datasheet: 624 TFLOPS with sparsity")


def gpu_hours(flops: float, accelerator: Accelerator, utilization: float) -> float:
    """Hours one accelerator needs for `flops` when it sustains `utilization` of its peak."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization={utilization} must be in (0, 1]")
    return flops / (accelerator.peak_flops * utilization) / 3600


def max_trainable_params(accelerator: Accelerator, regime: Regime) -> float:
    """Parameters whose training state fills the accelerator's memory (no room for activations)."""
    return accelerator.memory_bytes / regime.total


# BERT's pre-training (Devlin et al. 2019, appendix A.2): 1,000,000 steps of 256 sequences;
# 90% of the steps use sequences of 128 tokens, the last 10% sequences of 512.
BERT_STEPS, BERT_BATCH = 1_000_000, 256
BERT_SHORT_LEN, BERT_LONG_LEN, BERT_SHORT_SHARE = 128, 512, 0.9


def bert_pretraining_tokens() -> float:
    """Tokens BERT saw in pre-training, from the schedule in its paper's appendix."""
    mean_len = BERT_SHORT_SHARE * BERT_SHORT_LEN + (1 - BERT_SHORT_SHARE) * BERT_LONG_LEN
    return BERT_STEPS * BERT_BATCH * mean_len
