"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher's soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
