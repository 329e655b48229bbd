"""A learned vote: the members' label log-probabilities pooled with weights fitted on the
selection split (stacking, Wolpert 1992; the combiner is a logarithmic opinion pool).

    z[b, c] = sum_k w[k] * log p_k(c | x_b) + bias[c],   w >= 0,

fitted by L-BFGS-B (scipy) to the gold labels' cross-entropy plus `l2 * (|w|^2 + |bias|^2)`.
It generalises the plain votes: w = 1/K and bias = 0 is the geometric mean of the members'
probabilities; a member the pool does not need gets weight 0; the bias corrects a lean towards one
label that the members share. K + C numbers, so a few hundred selection examples fit it.

Pure functions over the members' label log-likelihoods; the model runs elsewhere.

>>> gold = np.array([0, 1, 1, 0, 1, 0])
>>> good = np.log([[.8, .2], [.3, .7], [.4, .6], [.6, .4], [.2, .8], [.7, .3]])   # right on all six
>>> noise = np.log([[.5, .5]] * 6)                                               # no information
>>> pool = fit_pool(np.stack([good, noise]), gold)
>>> bool(pool.weights[0] > 1.0), round(float(pool.weights[1]), 3)
(True, 0.0)
>>> bool((pool_logits(np.stack([good, noise]), pool).argmax(-1) == gold).all())
True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

L2 = 0.01   # fixed before any measurement (docs/results.md, *The demo*)
ZERO_WEIGHT = 1e-9   # L-BFGS-B stops near its bound 0, not on it (~1e-15): below this a weight is 0


class Pool(NamedTuple):
    weights: np.ndarray   # [K] one non-negative weight per member
    bias: np.ndarray      # [C] one offset per label

    def describe(self) -> dict[str, list[float]]:
        return {"weights": [float(w) for w in self.weights], "bias": [float(b) for b in self.bias]}


def label_log_probabilities(scores: np.ndarray) -> np.ndarray:
    """[..., C] label log-likelihoods -> log-softmax over the labels."""
    from scipy.special import log_softmax

    return log_softmax(np.asarray(scores, np.float64), axis=-1)


def pool_logits(scores: np.ndarray, pool: Pool) -> np.ndarray:
    """[K, B, C] members' label log-likelihoods -> [B, C] the pool's logits."""
    return np.einsum("k,kbc->bc", pool.weights, label_log_probabilities(scores)) + pool.bias


def fit_pool(scores: np.ndarray, gold: np.ndarray, *, l2: float = L2) -> Pool:
    """Fit the pool's weights and bias on labelled examples.

    Args:
      scores: [K, B, C] label log-likelihoods of K members on B examples.
      gold: [B] gold label indices.
    """
    from scipy.optimize import minimize   # scipy's bounded L-BFGS rather than a hand-written solver

    features = label_log_probabilities(scores)                # [K, B, C]
    members, examples, labels = features.shape
    gold = np.asarray(gold)
    if gold.shape != (examples,) or examples == 0:
        raise ValueError(f"need one gold label per example ({examples}), got shape {gold.shape}")
    onehot = np.eye(labels)[gold]                              # [B, C]

    def loss_and_gradient(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[:members], theta[members:]
        logits = np.einsum("k,kbc->bc", weights, features) + bias
        log_p = label_log_probabilities(logits)
        error = (np.exp(log_p) - onehot) / examples          # d(mean cross-entropy)/d(logits), [B, C]
        loss = -float((onehot * log_p).sum()) / examples + l2 * float(theta @ theta)
        gradient = np.concatenate([np.einsum("bc,kbc->k", error, features), error.sum(axis=0)]) + 2 * l2 * theta
        return loss, gradient

    start = np.concatenate([np.full(members, 1.0 / members), np.zeros(labels)])
    bounds = [(0.0, None)] * members + [(None, None)] * labels
    result = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds)
    weights = np.where(result.x[:members] > ZERO_WEIGHT, result.x[:members], 0.0)
    return Pool(weights, result.x[members:].copy())
