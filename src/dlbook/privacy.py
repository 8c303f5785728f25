"""Privacy, measured: membership-inference attacks and DP-SGD (Opacus) on ScatterNet features.

Attacks score each candidate example, higher meaning "more likely a training member":
the loss-threshold attack of Yeom et al. (2018) and the online likelihood-ratio attack (LiRA) of
Carlini et al. (2022). `attack_report` turns scores into an AUC and an advantage (max TPR-FPR),
each with a bootstrap interval from `metrics.bootstrap_ci`.

DP-SGD follows Tramèr and Boneh (2021): a linear model trained with Opacus on fixed,
data-independent ScatterNet features (so the features cost no privacy), group-normalized.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .checkpoint import (
    CheckpointError,
    atomic_write,
    checkpoint_paths,
    load_weights,
    save_checkpoint,
)
from .data import MNISTSplits, denormalize
from .metrics import BootstrapCI, bootstrap_ci, roc_auc, roc_curve
from .runtime import artifacts_dir, seed_everything

SCATTER_J, SCATTER_L = 2, 8  # 2 scales, 8 angles: 81 channels of 7x7 on a 28x28 image
SCATTER_CHANNELS, SCATTER_SIDE = 81, 7
SCATTER_GROUPS = 27  # GroupNorm groups over the 81 channels (no learned parameters)
NUM_FEATURES = SCATTER_CHANNELS * SCATTER_SIDE**2  # 3,969

Examples = tuple[Tensor, Tensor]  # (X, y)
Trainer = Callable[[nn.Module, Tensor, Tensor, int], nn.Module]  # train(model, X, y, seed)


# Membership inference ------------------------------------------------------------------------


@torch.inference_mode()
def per_example_loss(model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 1000) -> Tensor:
    """Cross-entropy of each example (N,), the model in eval mode."""
    model.eval()
    losses = [
        F.cross_entropy(model(X[i : i + batch_size]), y[i : i + batch_size], reduction="none")
        for i in range(0, len(X), batch_size)
    ]
    return torch.cat(losses).cpu()


@torch.inference_mode()
def logit_confidence(model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 1000) -> Tensor:
    """LiRA's statistic log(p / (1 - p)) of the true class (N,), computed stably from logits."""
    model.eval()
    out = []
    for i in range(0, len(X), batch_size):
        logits = model(X[i : i + batch_size]).double()  # (B, 10)
        true = logits.gather(1, y[i : i + batch_size, None]).squeeze(1)
        others = logits.scatter(1, y[i : i + batch_size, None], -math.inf)
        out.append(true - torch.logsumexp(others, 1))
    return torch.cat(out).cpu()


def loss_attack_scores(losses: Tensor) -> Tensor:
    """Yeom et al.'s attack: a low loss says "member" (so the score is minus the loss)."""
    return -losses


def reference_masks(num_models: int, num_examples: int, seed: int = 0) -> Tensor:
    """(K, N) bool: which examples each reference model trains on; each example in exactly
    half of the K models (K even), so every example has IN and OUT models."""
    if num_models < 2 or num_models % 2:
        raise ValueError(f"num_models must be even and at least 2; got {num_models}")
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(num_models, num_examples, generator=g).argsort(0)  # a permutation per column
    return order < num_models // 2


def lira_scores(target: Tensor, reference: Tensor, inside: Tensor) -> Tensor:
    """Online LiRA (Carlini et al. 2022, with a global variance): log N(t; mu_in, s_in) -
    log N(t; mu_out, s_out) per example. target (N,), reference and inside (K, N)."""
    reference, inside = reference.double(), inside.bool()
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    if bool((n_in == 0).any() or (n_out == 0).any()):
        raise ValueError("every example needs at least one IN and one OUT reference model")
    mu_in = (reference * inside).sum(0) / n_in
    mu_out = (reference * ~inside).sum(0) / n_out
    std_in = (reference - mu_in)[inside].std().clamp_min(1e-6)  # one variance for all examples
    std_out = (reference - mu_out)[~inside].std().clamp_min(1e-6)
    t = target.double()
    log_in = -0.5 * ((t - mu_in) / std_in) ** 2 - std_in.log()
    log_out = -0.5 * ((t - mu_out) / std_out) ** 2 - std_out.log()
    return log_in - log_out


def advantage(y_true: Tensor, scores: Tensor) -> float:
    """Membership advantage: the largest TPR - FPR over all thresholds."""
    fpr, tpr, _ = roc_curve(y_true, scores)
    return (tpr - fpr).max().item()


@dataclass(frozen=True)
class AttackResult:
    """An attack's AUC and advantage, each with its bootstrap interval, and its ROC curve."""

    auc: BootstrapCI
    advantage: BootstrapCI
    fpr: Tensor
    tpr: Tensor

    def tpr_at(self, max_fpr: float) -> float:
        """The largest true-positive rate at a false-positive rate of at most `max_fpr`."""
        return self.tpr[self.fpr <= max_fpr].max().item()


def attack_report(
    member_scores: Tensor, nonmember_scores: Tensor, num_bootstrap: int = 1000, seed: int = 0
) -> AttackResult:
    """AUC and advantage of an attack's scores on members (label 1) against non-members (0)."""
    scores = torch.cat([member_scores, nonmember_scores]).double()
    y = torch.cat([torch.ones(len(member_scores)), torch.zeros(len(nonmember_scores))]).long()
    auc = bootstrap_ci(y, scores, roc_auc, num_bootstrap, seed=seed)
    adv = bootstrap_ci(y, scores, advantage, num_bootstrap, seed=seed)
    fpr, tpr, _ = roc_curve(y, scores)
    return AttackResult(auc, adv, fpr, tpr)


def train_small(
    model: nn.Module, X: Tensor, y: Tensor, num_epochs: int, lr: float = 1e-3, seed: int = 0
) -> nn.Module:
    """Adam, batches of 64, no regularization: how a small model overfits its training set."""
    seed_everything(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(num_epochs):
        for idx in torch.randperm(len(X), generator=g).split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(X[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def reference_confidences(
    build: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    inside: Tensor,
    train: Trainer,
) -> Tensor:
    """(K, N) LiRA statistics of every pool example under K reference models, model k trained
    by `train(model, X, y, seed)` on the examples where inside[k] is True."""
    rows = []
    for k, mask in enumerate(inside):
        model = train(build(), X[mask], y[mask], k + 1)
        rows.append(logit_confidence(model, X, y))
    return torch.stack(rows)


def split_pool(X: Tensor, y: Tensor, size: int, seed: int = 0) -> tuple[Examples, Examples]:
    """(members, non-members): 2 * size examples drawn at random from (X, y), split in two at
    random. Train the target on the members; the non-members come from the same distribution."""
    if not 1 <= size <= len(X) // 2:
        raise ValueError(f"size must be between 1 and {len(X) // 2} (half of {len(X)}); got {size}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(X), generator=g)[: 2 * size].to(X.device)
    return (X[idx[:size]], y[idx[:size]]), (X[idx[size:]], y[idx[size:]])


def cached_trainer(
    train: Trainer, name: str, config: object, folder: Path | None = None
) -> Trainer:
    """`train`, with each model it trains cached in artifacts/privacy/<name>-<digest>, the digest
    taken over `config` (what determines training: a recipe), the seed and the examples."""
    folder = folder or artifacts_dir() / "privacy"

    def cached(model: nn.Module, X: Tensor, y: Tensor, seed: int) -> nn.Module:
        digest = hashlib.sha256(f"{config!r}|{seed}|{_digest(X, y)}".encode()).hexdigest()[:16]
        path = folder / f"{name}-{digest}"
        if checkpoint_paths(path)[1].exists():
            try:
                load_weights(path, model)  # a damaged file is refused before any copy
                return model.eval()
            except CheckpointError as err:
                print(f"ignoring the cached model ({err}); training it again")
        model = train(model, X, y, seed)
        save_checkpoint(path, model, meta={"config": repr(config), "seed": seed, "n": len(X)})
        return model

    return cached


def loss_attack(
    model: nn.Module, members: Examples, others: Examples, num_bootstrap: int = 1000, seed: int = 0
) -> AttackResult:
    """Yeom et al.'s loss-threshold attack on `model`: training members against non-members."""
    member_loss, other_loss = (per_example_loss(model, X, y) for X, y in (members, others))
    return attack_report(
        loss_attack_scores(member_loss), loss_attack_scores(other_loss), num_bootstrap, seed
    )


def lira_attack(
    target: nn.Module,
    build: Callable[[], nn.Module],
    train: Trainer,
    members: Examples,
    others: Examples,
    num_models: int = 8,
    num_bootstrap: int = 1000,
    seed: int = 0,
) -> AttackResult:
    """Online LiRA: `num_models` reference models, each trained by `train(model, X, y, seed)` on
    a random half of members + others, calibrate each example's confidence under the target."""
    X, y = torch.cat([members[0], others[0]]), torch.cat([members[1], others[1]])
    inside = reference_masks(num_models, len(X), seed)
    reference = reference_confidences(build, X, y, inside, train)
    scores = lira_scores(logit_confidence(target, X, y), reference, inside)
    n = len(members[0])
    return attack_report(scores[:n], scores[n:], num_bootstrap, seed)


# ScatterNet features -------------------------------------------------------------------------


def scattering() -> nn.Module:
    """Kymatio's 2-D scattering transform (J=2, L=8) for 28x28 images, in PyTorch."""
    # `import kymatio.torch` fails with SciPy >= 1.15 (its 3-D part imports scipy's removed
    # sph_harm); the 2-D frontend imported directly needs none of it.
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    return ScatteringTorch2D(J=SCATTER_J, shape=(28, 28), L=SCATTER_L)


@torch.inference_mode()
def scatter_features(X: Tensor, batch_size: int = 1000) -> Tensor:
    """Group-normalized ScatterNet features (N, 3969), float16, of images (N, 1, 28, 28)."""
    transform, out = scattering(), []
    for i in range(0, len(X), batch_size):
        pixels = denormalize(X[i : i + batch_size].cpu())  # back to [0, 1]
        z = transform(pixels).reshape(len(pixels), SCATTER_CHANNELS, SCATTER_SIDE, SCATTER_SIDE)
        z = F.group_norm(z, SCATTER_GROUPS)  # per example: no statistics of other examples
        out.append(z.reshape(len(pixels), -1).half())
    return torch.cat(out) if out else torch.empty(0, NUM_FEATURES, dtype=torch.float16)


def _digest(*tensors: Tensor) -> str:
    """SHA-256 of the tensors' bytes and shapes (what the cached features were computed from)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_scatter_features(
    data: MNISTSplits,
    folder: Path | None = None,
    splits: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, Tensor]:
    """{split: ScatterNet features} of the named splits, from artifacts/ when cached for exactly
    these images (a SHA-256 of them names the file), else computed and saved."""
    images = {name: getattr(data, f"X_{name}") for name in splits}
    key = _digest(*images.values())[:16]
    path = (folder or artifacts_dir() / "privacy") / f"scatter-{key}.safetensors"
    if path.exists():
        try:
            loaded = load_file(str(path))  # safetensors sorts the names: keep the splits' order
            return {name: loaded[name] for name in images}
        except Exception as err:  # a damaged cache is recomputed, not fatal
            print(f"ignoring the cached features ({err}); computing them again")
    features = {name: scatter_features(X) for name, X in images.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: save_file(features, str(p)))
    return features


# DP-SGD ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DPRecipe:
    """Everything that determines a DP-SGD run on the features (epsilon None: no privacy)."""

    epsilon: float | None  # the target budget; the accountant picks the noise to meet it
    delta: float = 1e-5
    num_epochs: int = 20
    batch_size: int = 4096  # expected batch under Poisson sampling
    lr: float = 4.0  # SGD with momentum 0.9; large because clipped gradients are small
    max_grad_norm: float = 0.1  # per-example clipping norm C
    accountant: str = "rdp"
    seed: int = 0


@dataclass
class DPRun:
    """A trained linear model with its privacy accounting."""

    model: nn.Module
    recipe: DPRecipe
    epsilon: float | None  # what the accountant reports after training (None: not private)
    noise_multiplier: float
    sample_rate: float
    steps: int
    train_seconds: float

    def privacy_block(self) -> dict | None:
        """The model card's `privacy` block (None for the non-private run)."""
        if self.epsilon is None:
            return None
        r = self.recipe
        return {
            "mechanism": "DP-SGD (Opacus, per-example clipping, Gaussian noise, Poisson sampling)",
            "epsilon": round(self.epsilon, 4),
            "delta": r.delta,
            "accountant": r.accountant,
            "max_grad_norm": r.max_grad_norm,
            "noise_multiplier": round(self.noise_multiplier, 6),
            "sample_rate": round(self.sample_rate, 6),
            "epochs": r.num_epochs,
        }


def linear_head() -> nn.Module:
    """The private model: one linear layer on the 3,969 features (39,700 parameters)."""
    return nn.Linear(NUM_FEATURES, 10)


def train_dp(features: Tensor, y: Tensor, recipe: DPRecipe) -> DPRun:
    """DP-SGD with Opacus's `make_private_with_epsilon` (ghost clipping, Poisson sampling), or
    the same SGD without clipping and noise when recipe.epsilon is None."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    seed_everything(recipe.seed)
    model, X = linear_head(), features.float()
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9)
    loader = DataLoader(TensorDataset(X, y), batch_size=recipe.batch_size, shuffle=True)
    criterion: Callable = nn.CrossEntropyLoss()
    engine, sigma = None, 0.0
    with warnings.catch_warnings():  # Opacus: secure RNG off (fine for teaching); hook notes
        warnings.simplefilter("ignore")
        if recipe.epsilon is not None:
            engine = PrivacyEngine(accountant=recipe.accountant)
            model, optimizer, criterion, loader = engine.make_private_with_epsilon(
                    module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                    target_epsilon=recipe.epsilon, target_delta=recipe.delta,
                    epochs=recipe.num_epochs, max_grad_norm=recipe.max_grad_norm,
                    grad_sample_mode="ghost",
                )  # fmt: skip
            sigma = optimizer.noise_multiplier
        tic, steps = time.perf_counter(), 0
        model.train()
        for _ in range(recipe.num_epochs):
            for Xb, yb in loader:
                if len(Xb) == 0:  # Poisson sampling may draw an empty batch
                    continue
                optimizer.zero_grad()
                criterion(model(Xb), yb).backward()
                optimizer.step()
                steps += 1
        seconds = time.perf_counter() - tic
    eps = engine.get_epsilon(recipe.delta) if engine is not None else None
    state = {k.removeprefix("_module."): v for k, v in model.state_dict().items()}
    head = linear_head()  # a plain module, without Opacus's wrapper and hooks
    head.load_state_dict(state)
    rate = recipe.batch_size / len(X)
    return DPRun(head.eval(), recipe, eps, sigma, rate, steps, seconds)


def _run_meta(run: DPRun) -> dict:
    return {
        "recipe": asdict(run.recipe),
        "epsilon": run.epsilon,
        "noise_multiplier": run.noise_multiplier,
        "sample_rate": run.sample_rate,
        "steps": run.steps,
        "train_seconds": run.train_seconds,
    }


def cached_dp_run(
    features: Tensor, y: Tensor, recipe: DPRecipe, folder: Path | None = None
) -> DPRun:
    """`train_dp`, cached in artifacts/privacy/ under the recipe and the data's digest."""
    key = hashlib.sha256(f"{asdict(recipe)}{_digest(features, y)}".encode()).hexdigest()[:16]
    name = "plain" if recipe.epsilon is None else f"eps{recipe.epsilon:g}"
    path = (folder or artifacts_dir() / "privacy") / f"dp-{name}-{key}"
    if checkpoint_paths(path)[1].exists():
        try:
            model = linear_head()
            meta = load_weights(path, model)
            fields = {k: meta[k] for k in ("epsilon", "noise_multiplier", "sample_rate", "steps")}
            return DPRun(model.eval(), recipe, **fields, train_seconds=meta["train_seconds"])
        except (CheckpointError, KeyError) as err:
            print(f"ignoring the cached run ({err}); training it again")
    run = train_dp(features, y, recipe)
    save_checkpoint(path, run.model, meta=_run_meta(run))
    return run
