"""Pairwise and listwise losses of top-k training, on a row's candidate scores.

Every row holds one positive and ``n`` sampled negatives: ``scores`` float [B, 1 + n], the
positive in column 0. Both losses return one value per row [B]; the task weights and averages.

- ``bpr`` (Rendle et al. 2009, BPR-Opt): ``-mean_j log σ(s_pos - s_j)`` over the negatives.
- ``sampled_softmax``: the cross-entropy of the positive against the negatives, with each
  negative's logit corrected by ``-log(n · q_j)`` (q_j its probability under the sampler), so
  the sampled normaliser ``e^{s_pos} + Σ_j e^{s_j} / (n q_j)`` estimates the full softmax's
  (Bengio & Senécal 2008; Jean et al. 2015). Under uniform sampling the correction is the
  constant ``log(I / n)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "sampled_softmax_loss", "LOSSES"]


def bpr_loss(scores: torch.Tensor, neg_prob: torch.Tensor | None = None) -> torch.Tensor:
    """``-mean_j log σ(s[:, 0] - s[:, j])`` per row [B]; ``neg_prob`` is unused."""
    return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean(1)


def sampled_softmax_loss(scores: torch.Tensor, neg_prob: torch.Tensor | None = None) -> torch.Tensor:
    """``-log softmax`` of column 0 with corrected negatives per row [B]; ``neg_prob`` float [B, n]
    (None: no correction)."""
    logits = scores
    if neg_prob is not None:
        n = scores.shape[1] - 1
        logits = torch.cat([scores[:, :1], scores[:, 1:] - torch.log(neg_prob * n)], 1)  # [B, 1 + n]
    return torch.logsumexp(logits, 1) - logits[:, 0]


LOSSES = {"bpr": bpr_loss, "sampled_softmax": sampled_softmax_loss}
