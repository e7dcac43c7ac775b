"""A vectorised PyTorch class-level CRL, the peer ``crl_jax.bench_loss --torch`` times.

The ``B x K x K`` formulation a straightforward port would use: mining by ``topk`` per
class, per-anchor rows, the relative criterion over ``[A, B, K, K]`` triplets, plus
cross-entropy, blended as Eqn 8 with ``alpha = 0.5``. Benchmark only: it is not a
reference (``tests/crl/reference.py`` is) and needs ``torch`` (CPU build is enough),
which the package never imports. ``bench_loss`` loads this file from a source checkout.
"""

from __future__ import annotations

import numpy as np
import torch

from crl_jax.crl import heads  # the padded-class value of the JAX loss it is timed against


def torch_variants(logits, labels, class_mask, kappa, designs):
  """``torch/<design>`` -> callable timing the PyTorch CRL (+ CE) and its backward on
  the same inputs as the JAX variants; class-level designs only."""
  logits_t = torch.tensor(np.asarray(logits, np.float32))
  labels_t = torch.tensor(np.asarray(labels, np.int64))
  mask_t = torch.tensor(np.asarray(class_mask))
  variants = {}
  for name in designs:
    _, criterion, scope = name.split("/")

    def step(*_, criterion=criterion, scope=scope):
      x = logits_t.clone().requires_grad_(True)
      loss = torch_blended(x, labels_t, mask_t, criterion, scope, kappa)
      loss.backward()
      return loss.detach(), x.grad

    variants[f"torch/{name}"] = step
  return variants


def torch_blended(logits, labels, class_mask, criterion, scope, kappa, rho=0.5,
                  num_bins=50, alpha=0.5):
  """Class-level CRL + CE: f32[B, A, C] logits, int64[B, A] labels, bool[A, C] class
  mask -> scalar."""
  batch_size, num_attributes, max_classes = logits.shape
  k = min(kappa, batch_size)
  masked = logits.masked_fill(~class_mask, heads.PADDED_CLASS_LOGIT)
  probabilities = torch.softmax(masked, dim=-1)  # [B, A, C]
  clipped = labels.clamp(0, max_classes - 1)
  valid = (labels >= 0) & (labels < max_classes) & class_mask.gather(
      1, clipped.T).T  # [B, A]
  log_probabilities = torch.log_softmax(masked, dim=-1)
  picked = log_probabilities.gather(2, clipped[..., None])[..., 0]
  cross_entropy = -(picked * valid).sum(0) / valid.sum(0).clamp(min=1)
  member = (clipped[..., None] == torch.arange(max_classes)) & valid[..., None]
  histogram = member.sum(0)  # [A, C]
  order = torch.argsort(histogram, dim=1, stable=True)
  cumulative = torch.cumsum(histogram.gather(1, order), dim=1).float()
  budget = rho * histogram.sum(1, keepdim=True).float() * (1 + 1e-6)
  minority = torch.zeros_like(member[0]).scatter(1, order, cumulative <= budget)
  eligible = (histogram >= 2) & (minority if scope == "minority" else True)
  scores = probabilities.permute(1, 2, 0)  # [A, C, B]
  stopped = scores.detach()
  member_t = member.permute(1, 2, 0)
  other_t = ~member_t & valid.T[:, None, :]
  inf = torch.tensor(float("inf"))
  positive_indices = torch.topk(torch.where(member_t, -stopped, -inf), k).indices
  positive_ok = member_t.gather(2, positive_indices)
  negative_indices = torch.topk(torch.where(other_t, stopped, -inf), k).indices
  negative_ok = other_t.gather(2, negative_indices)
  anchor_class = clipped.T  # [A, B]
  anchor_ok = valid.T & eligible.gather(1, anchor_class)
  anchor_score = probabilities.permute(1, 0, 2).gather(2, anchor_class[..., None])
  rows = anchor_class[..., None].expand(num_attributes, batch_size, k)

  def per_anchor(per_class):
    return per_class.gather(1, rows)

  positive_rows = per_anchor(positive_indices)
  positive_mask = (per_anchor(positive_ok) & anchor_ok[..., None]
                   & (positive_rows != torch.arange(batch_size)[None, :, None]))
  negative_mask = per_anchor(negative_ok) & anchor_ok[..., None]
  positive_distances = (anchor_score - per_anchor(scores.gather(2, positive_indices))).abs()
  negative_distances = anchor_score - per_anchor(scores.gather(2, negative_indices))

  def masked_mean(values, mask):
    dims = tuple(range(1, values.dim()))
    return (values * mask).sum(dims) / mask.sum(dims).clamp(min=1)

  if criterion == "relative":
    terms = torch.relu(0.5 + positive_distances[..., :, None]
                       - negative_distances[..., None, :])
    crl = masked_mean(terms, positive_mask[..., :, None] & negative_mask[..., None, :])
  elif criterion == "absolute":
    crl = 0.5 * (masked_mean(positive_distances ** 2, positive_mask)
                 + masked_mean(torch.relu(0.5 - negative_distances) ** 2, negative_mask))
  else:
    bins = torch.linspace(-1.0, 1.0, num_bins)
    delta = 2.0 / (num_bins - 1)

    def histogram_of(distances, mask):
      weights = torch.relu(1 - (distances.clamp(-1, 1)[..., None] - bins).abs() / delta)
      return ((weights * mask[..., None]).sum((1, 2))
              / mask.sum((1, 2)).clamp(min=1)[:, None])  # [A, T]

    crl = (histogram_of(positive_distances, positive_mask)
           * torch.cumsum(histogram_of(negative_distances, negative_mask), -1)).sum(-1)
  return (alpha * crl + (1 - alpha) * cross_entropy).sum()
