"""Many prompts in one batch: row i of a batch uses prompt `table[prompt_index[i]]`.

This is what ensembles (input replicated across N prompts) and serving (a batch mixing tasks)
stand on. Prompts of different lengths are LEFT-padded inside the table: the real prompt then
sits right before the input, so models with relative positions (T5) see the same distances as
an unpadded row, and models deriving positions from the mask (Gemma 3) are unaffected.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class PromptTable(NamedTuple):
    """Stacked prompts.

    embeddings: [N, P, E] float32, P = the longest prompt; shorter ones left-padded with zeros.
    mask:       [N, P] bool, False on padding.
    """

    embeddings: jax.Array
    mask: jax.Array


def stack_prompts(prompts: Sequence[np.ndarray | jax.Array]) -> PromptTable:
    """[P_n, E] arrays -> PromptTable of N prompts."""
    if not prompts:
        raise ValueError("stack_prompts needs at least one prompt")
    widths = {int(p.shape[-1]) for p in prompts}
    if len(widths) != 1:
        raise ValueError(f"prompts have different widths {sorted(widths)}: they belong to different models")
    longest = max(int(p.shape[0]) for p in prompts)
    embeddings = [jnp.pad(jnp.asarray(p, jnp.float32), ((longest - p.shape[0], 0), (0, 0))) for p in prompts]
    mask = [np.arange(longest) >= longest - p.shape[0] for p in prompts]
    return PromptTable(jnp.stack(embeddings), jnp.asarray(np.stack(mask)))


def gather_prompts(table: PromptTable, prompt_index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The prompt of each row: ([B, P, E], [B, P]) for prompt_index [B] int."""
    return table.embeddings[prompt_index], table.mask[prompt_index]
