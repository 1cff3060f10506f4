"""Loss functions of the CellBridge models (pure tensors in, tensors out).

Sections: scMDCF (cross-modal mutual-information contrastive loss, DEC clustering loss).
Other models add their own clearly named functions below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

# ---------------------------------------------------------------------------------------------
# scMDCF — METHODS §2.3
# ---------------------------------------------------------------------------------------------

_EPS = sys.float_info.epsilon


def joint_code_distribution(codes_a: torch.Tensor, codes_b: torch.Tensor,
                            reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Symmetrised joint distribution of two soft codes.

    ``P = Σ_n a_nᵀ b_n`` (``k x k``), then ``(P + Pᵀ)/2``, normalised to sum 1.

    Parameters
    ----------
    codes_a, codes_b
        ``(n, k)`` rows of probabilities (softmax outputs) for the same ``n`` cells.
    reduce
        Applied to the raw sum ``Σ_n a_nᵀ b_n`` before symmetrising, e.g. an autograd-aware
        all-reduce so that ``n`` runs over the cells of every data-parallel process.
    """
    if codes_a.shape != codes_b.shape:
        raise ValueError(f"codes must have the same shape, got {tuple(codes_a.shape)} and {tuple(codes_b.shape)}")
    p = codes_a.T @ codes_b
    if reduce is not None:
        p = reduce(p)
    p = (p + p.T) / 2
    return p / p.sum()


def mutual_information_loss(
    codes_a: torch.Tensor, codes_b: torch.Tensor, lamb: float = 1.0, eps: float = _EPS,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """scMDCF cross-modal contrastive loss ``−I(A;B) − λ·[H(A) + H(B)]``.

    ``L = −Σ_ij P_ij [log P_ij − (λ+1) log P_i − (λ+1) log P_j]`` where ``P`` is the
    symmetrised joint distribution of the codes and ``P_i``, ``P_j`` its marginals; values
    below ``eps`` (machine epsilon) are clamped before the logarithms.

    Parameters
    ----------
    codes_a, codes_b
        ``(n, k)`` soft assignments (rows sum to 1) of the same cells in two modalities.
    lamb
        Weight λ of the entropy terms (10 for ATAC, 0.5 for ADT in the reference).
    reduce
        See :func:`joint_code_distribution` (data-parallel training).
    """
    p = joint_code_distribution(codes_a, codes_b, reduce)
    k = p.shape[0]
    p_i = p.sum(dim=1, keepdim=True).expand(k, k)
    p_j = p.sum(dim=0, keepdim=True).expand(k, k)
    p, p_i, p_j = p.clamp_min(eps), p_i.clamp_min(eps), p_j.clamp_min(eps)
    return -(p * (p.log() - (lamb + 1) * p_i.log() - (lamb + 1) * p_j.log())).sum()


def dec_soft_assignment(z: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student-t soft assignment ``q_ij ∝ (1 + ‖z_i − μ_j‖²/α)^(−(α+1)/2)`` (rows sum to 1)."""
    dist2 = ((z.unsqueeze(1) - centers.unsqueeze(0)) ** 2).sum(dim=2)
    q = (1.0 + dist2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def dec_target_distribution(q: torch.Tensor,
                            reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """DEC target ``p_ij ∝ q_ij² / f_j`` with ``f_j = Σ_i q_ij`` (rows sum to 1).

    Gradient flows unless ``q`` is detached. ``reduce`` is applied to the cluster frequencies
    ``f`` (``(1, K)``), e.g. an autograd-aware all-reduce so that ``i`` runs over the cells of
    every data-parallel process.
    """
    square = q.pow(2)  # before the sum: autograd then accumulates in the same order as q²/Σq
    freq = q.sum(dim=0, keepdim=True)
    weight = square / (freq if reduce is None else reduce(freq))
    return weight / weight.sum(dim=1, keepdim=True)


def dec_kl_loss(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``mean_i Σ_j p_ij log(p_ij / (q_ij + eps))`` (the reference's KL with its 1e-6 guard)."""
    return (p * torch.log(p.clamp_min(1e-30) / (q + eps))).sum(dim=1).mean()


def mse_reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a decoder output and its (scaled) input."""
    return torch.mean((x_hat - x) ** 2)


# --- BiCLUM ---------------------------------------------------------------------------------


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float, similarity: str = "dot") -> torch.Tensor:
    """NT-Xent over N positive pairs ``(a_i, b_i)`` (METHODS §1.5).

    The 2N embeddings are stacked; each row's partner is scored with softmax over the other
    2N - 1 rows (itself excluded) of ``sim / tau``; the loss is the mean of -log p over 2N rows.
    ``similarity="dot"`` is the reference's raw dot product (D1); ``"cosine"`` L2-normalises first.
    """
    n = a.shape[0]
    z = torch.cat([a, b])
    if similarity == "cosine":
        z = torch.nn.functional.normalize(z, dim=1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    logits = (z @ z.T) / tau
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return torch.nn.functional.cross_entropy(logits, partner)
