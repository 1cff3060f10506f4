"""The models' losses (cellbridge.models.losses) on small cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from cellbridge.models.losses import (
    dec_kl_loss,
    dec_soft_assignment,
    dec_target_distribution,
    joint_code_distribution,
    mutual_information_loss,
    nt_xent,
)


def test_mi_loss_identical_one_hot_codes():
    # A = R = I2 -> P = diag(1/2, 1/2), P_i = P_j = 1/2 -> L = -(1 + 2λ) log 2
    codes = torch.eye(2, dtype=torch.float64)
    assert mutual_information_loss(codes, codes, lamb=0.0).item() == pytest.approx(-math.log(2), abs=1e-9)
    assert mutual_information_loss(codes, codes, lamb=1.0).item() == pytest.approx(-3 * math.log(2), abs=1e-9)


def test_mi_loss_hand_computed_2x2():
    a = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    # a1ᵀr1 = [[.5,0],[.5,0]], a2ᵀr2 = [[.5,.5],[0,0]] -> sum [[1,.5],[.5,0]] (already symmetric) / 2
    p = joint_code_distribution(a, r)
    assert torch.allclose(p, torch.tensor([[0.5, 0.25], [0.25, 0.0]], dtype=torch.float64))
    # marginals (.75, .25); I = .5 log(.5/.75²) + 2 · .25 log(.25/(.75·.25))
    mi = 0.5 * math.log(0.5 / 0.75**2) + 2 * 0.25 * math.log(0.25 / (0.75 * 0.25))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mutual_information_loss(a, r, lamb=0.0).item() == pytest.approx(-mi, abs=1e-9)
    assert mutual_information_loss(a, r, lamb=0.5).item() == pytest.approx(-mi - 0.5 * 2 * h, abs=1e-9)


def test_mi_loss_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        mutual_information_loss(torch.ones(3, 2) / 2, torch.ones(3, 4) / 4)


def test_mi_loss_has_gradient():
    logits = torch.randn(5, 3, requires_grad=True)
    loss = mutual_information_loss(logits.softmax(1), torch.randn(5, 3).softmax(1), lamb=10)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_dec_soft_assignment_and_target_by_hand():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    q = dec_soft_assignment(z, mu, alpha=1.0)
    # kernel 1/(1 + d²): cell 0 -> (1, 1/2), cell 1 -> (1/5, 1/2)
    q_hand = torch.tensor([[2 / 3, 1 / 3], [2 / 7, 5 / 7]], dtype=torch.float64)
    assert torch.allclose(q, q_hand)
    f = q_hand.sum(0)  # (20/21, 22/21)
    w = q_hand**2 / f
    p_hand = w / w.sum(1, keepdim=True)
    assert torch.allclose(dec_target_distribution(q), p_hand)
    assert p_hand[0, 0].item() == pytest.approx((4 / 9 / (20 / 21)) / (4 / 9 / (20 / 21) + 1 / 9 / (22 / 21)))


def test_dec_kl_loss_by_hand():
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    assert dec_kl_loss(p, q).item() == pytest.approx(math.log(1 / (0.5 + 1e-6)))
    assert dec_kl_loss(q, q).item() == pytest.approx(0.0, abs=1e-5)


def test_nt_xent_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Each row: partner logit 1, two others 0 (self excluded) -> -log(e / (e + 2)).
    assert nt_xent(a, a.clone(), tau=1.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    # Temperature divides the similarities; cosine normalises the rows first.
    assert nt_xent(2 * a, 2 * a, tau=4.0).item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    assert nt_xent(3 * a, a, tau=1.0, similarity="cosine").item() == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
