import math

import torch
import torch.nn.functional as F

import dlbook as dl

D = dl.distill


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[2.0, 1.0, 0.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.7

    def softmax(z):
        e = [math.exp(v / T) for v in z]
        return [v / sum(e) for v in e]

    p, q = softmax([2.0, 1.0, 0.0]), softmax([1.0, 0.0, -1.0])
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    ce = -math.log(math.exp(1.0) / (math.exp(1.0) + 1.0 + math.exp(-1.0)))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert abs(D.kd_loss(s, t, y, T, alpha).item() - expected) < 1e-6


def test_kd_loss_is_cross_entropy_at_alpha_zero_and_zero_kl_for_equal_logits():
    s, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    torch.testing.assert_close(D.kd_loss(s, torch.randn(8, 10), y, 3.0, 0.0), F.cross_entropy(s, y))
    assert D.kd_loss(s, s, y, 3.0, 1.0).abs().item() < 1e-6


def test_student_learns_from_a_teacher():
    torch.manual_seed(0)
    X = torch.randn(256, 1, 28, 28)
    teacher_logits = 5 * X.flatten(1)[:, :10]  # a teacher that reads ten pixels
    y = teacher_logits.argmax(1)
    student = D.train_student(dl.MLP(hidden=32), X, y, teacher_logits, num_epochs=20, lr=1e-2)
    with torch.inference_mode():
        assert (student(X).argmax(1) == y).float().mean() > 0.9


def test_compare_students_trains_each_setting_per_seed_like_train_student(tiny_splits):
    X, y = tiny_splits.X_train[:200], tiny_splits.y_train[:200]
    teacher = torch.randn(200, 10, generator=torch.Generator().manual_seed(0))
    build = lambda: dl.MLP(hidden=8)  # noqa: E731
    kw = {"num_epochs": 1, "temperature": 4.0}
    acc = dl.distill.compare_students(
        build, X, y, teacher, tiny_splits.X_test, tiny_splits.y_test, seeds=[3, 4], **kw
    )
    assert list(acc) == ["alone", "distilled"] and all(len(v) == 2 for v in acc.values())
    dl.seed_everything(4)  # the reference: one student by hand
    student = dl.distill.train_student(build(), X, y, teacher, seed=4, alpha=0.9, **kw)
    assert (
        acc["distilled"][1]
        == dl.evaluate_tensors(student, tiny_splits.X_test, tiny_splits.y_test)[1]
    )
    at_zero = dl.distill.compare_students(
        build, X, y, teacher, tiny_splits.X_test, tiny_splits.y_test, seeds=[3, 4], alpha=0.0, **kw
    )
    assert at_zero["distilled"] == at_zero["alone"] == acc["alone"]  # alpha 0: labels only


def test_verdict_needs_twice_the_spread_and_the_floor():
    assert dl.distill.verdict(0.5, 0.3) == "within noise"  # below twice the spread
    assert dl.distill.verdict(0.7, 0.3) == "a measurable gain"
    assert dl.distill.verdict(-0.7, 0.3) == "a measurable loss"
    assert dl.distill.verdict(0.2, 0.0) == "within noise"  # one seed: the floor decides
