"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher's soft targets."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .runtime import seed_everything
from .training import evaluate_tensors


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    y: Tensor,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(student, y).

    Logits (B, C); both distributions softened by the temperature T; the T^2 keeps the soft
    term's gradients on the scale of the hard one. alpha = 0 is plain cross-entropy.
    """
    T = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / T, dim=1),
        F.log_softmax(teacher_logits / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, y)


def train_student(
    student: nn.Module,
    X: Tensor,
    y: Tensor,
    teacher_logits: Tensor | None,
    *,
    num_epochs: int,
    batch_size: int = 128,
    lr: float = 3e-3,
    temperature: float = 4.0,
    alpha: float = 0.9,
    seed: int = 0,
) -> nn.Module:
    """Train the student with kd_loss on precomputed teacher logits (None: labels only)."""
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    torch.manual_seed(seed)
    student.train()
    for epoch in range(num_epochs):
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(X), generator=g).to(X.device)
        for start in range(0, len(X), batch_size):
            idx = order[start : start + batch_size]
            logits = student(X[idx])  # (B, 10)
            if teacher_logits is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = kd_loss(logits, teacher_logits[idx], y[idx], temperature, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return student.eval()


def compare_students(
    build: Callable[[], nn.Module],
    X: Tensor,
    y: Tensor,
    teacher_logits: Tensor,
    X_test: Tensor,
    y_test: Tensor,
    *,
    seeds: Iterable[int],
    num_epochs: int,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> dict[str, list[float]]:
    """Test accuracy of students trained alone and distilled from `teacher_logits`, one of each
    per seed (the seed also initializes the student): {'alone': [...], 'distilled': [...]}."""
    seeds = list(seeds)
    accuracy: dict[str, list[float]] = {}
    for name, logits in (("alone", None), ("distilled", teacher_logits)):
        accuracy[name] = []
        for seed in seeds:
            seed_everything(seed)
            student = train_student(
                build(), X, y, logits, num_epochs=num_epochs, temperature=temperature,
                alpha=alpha, seed=seed,
            )  # fmt: skip
            accuracy[name].append(evaluate_tensors(student, X_test, y_test)[1])
    return accuracy


def verdict(gain_pts: float, spread_pts: float, floor_pts: float = 0.3) -> str:
    """What a difference between two settings means, given the spread between seeds: "within
    noise" unless it exceeds twice the spread and `floor_pts` (one run has no spread)."""
    if abs(gain_pts) < max(2 * spread_pts, floor_pts):
        return "within noise"
    return "a measurable gain" if gain_pts > 0 else "a measurable loss"
