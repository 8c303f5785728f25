import pytest
import torch

from dlbook import homomorphic as H

pytest.importorskip("tenseal")


def test_encrypted_head_equals_the_plaintext_one():
    torch.manual_seed(0)
    model = H.SquareNet(hidden=4)
    X = torch.randn(5, 1, 28, 28)
    result = H.classify_encrypted(model, X)
    assert result.logits.shape == (5, 10)
    assert torch.allclose(result.logits, result.plain_logits, atol=1e-3)
    assert result.total_s > 0 and result.plain_s > 0


def test_one_pass_holds_at_most_the_slots():
    with pytest.raises(ValueError, match="one pass holds"):
        H.classify_encrypted(H.SquareNet(hidden=2), torch.zeros(4097, 1, 28, 28))
