"""Reparameterisations of the prompt during training, folded into a plain prompt at export.

`none`: the trained parameters are the prompt P [L, E] itself.
`residual` (Razdaibiedina et al. 2023, "Residual Prompt Tuning"): the trained parameters are P and
a small MLP with a skip connection; the model sees

    fold(P, mlp) = P + up(relu(down(norm(P)))) / sqrt(H)     down: E -> H, up: H -> E (H = bottleneck)

`norm` is a parameter-free layer norm over E (the MLP then sees unit-scale rows whatever the
model's embedding scale); the 1/sqrt(H) output scale (as LoRA scales its adapters by alpha/r) keeps
the size of the MLP's early steps from growing with its width. `up` starts at zero, so at step 0 the folded prompt IS the initial prompt
(a class-label or transferred init keeps its meaning) and the MLP grows from there, as LoRA's
adapters do. Every saved prompt is the fold, a plain [L, E] array: artifacts, the registry,
ensembles and serving never see the MLP; checkpoints keep it (and its optimiser state) to resume.

The trained parameters are a pytree: the bare [L, E] array for `none` (so checkpoints of plain
runs are unchanged), `{"prompt": [L, E], "mlp": {...}}` for `residual`.

Example:
    >>> import numpy as np
    >>> prompt = np.ones((3, 8), np.float32)
    >>> trainable = init_trainable(prompt, reparam="residual", bottleneck=4, seed=0)
    >>> bool(np.array_equal(fold(trainable), prompt))     # up starts at zero
    True
    >>> fold(init_trainable(prompt, reparam="none", bottleneck=4, seed=0)) is prompt
    True
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REPARAMS = ("none", "residual")
_NORM_EPS = 1e-6
_SEED_SALT = 0x5E51D   # the MLP's key differs from the prompt init's key of the same seed


def init_trainable(prompt: np.ndarray | jax.Array, *, reparam: str, bottleneck: int, seed: int) -> Any:
    """The trained parameters that start from `prompt` [L, E] (see the module doc)."""
    if reparam == "none":
        return prompt
    if reparam != "residual":
        raise ValueError(f"unknown reparam {reparam!r}; choose one of {', '.join(REPARAMS)}")
    width = int(np.shape(prompt)[-1])
    down = jax.random.normal(jax.random.fold_in(jax.random.key(seed), _SEED_SALT), (width, bottleneck), jnp.float32)
    return {"prompt": jnp.asarray(prompt, jnp.float32),
            "mlp": {"down": down / np.sqrt(width), "down_bias": jnp.zeros((bottleneck,), jnp.float32),
                    "up": jnp.zeros((bottleneck, width), jnp.float32), "up_bias": jnp.zeros((width,), jnp.float32)}}


def fold(trainable: Any) -> jax.Array:
    """The prompt [L, E] the model sees (traceable; the identity for a bare prompt)."""
    if not isinstance(trainable, dict):
        return trainable
    prompt, mlp = trainable["prompt"], trainable["mlp"]
    centred = prompt - prompt.mean(axis=-1, keepdims=True)
    normed = centred * jax.lax.rsqrt((centred ** 2).mean(axis=-1, keepdims=True) + _NORM_EPS)
    hidden = jax.nn.relu(normed @ mlp["down"] + mlp["down_bias"])
    return prompt + (hidden @ mlp["up"]) / np.sqrt(mlp["up"].shape[0]) + mlp["up_bias"]


@jax.jit
def _fold_jitted(trainable: Any) -> jax.Array:
    return fold(trainable)


def folded_prompt(trainable: Any) -> np.ndarray:
    """The prompt to score and save: fold(trainable) as a float32 numpy array [L, E]."""
    if not isinstance(trainable, dict):
        return np.asarray(trainable, np.float32)
    return np.asarray(_fold_jitted(trainable), np.float32)
