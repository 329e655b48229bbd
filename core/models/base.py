"""The contract every frozen-model family implements (T5, Gemma 3).

The rest of softprompt never touches a family's layers directly: it calls the four functions of
`FamilyOps` with the frozen parameters passed as a plain (never differentiated) argument, and the
soft prompts, one per row or a table and each row's index into it. Shapes:

- `prompts`      [B, P, E] float   one soft prompt per row, or with `prompt_index` [B] int a table
                                   [N, P, E] of which row b uses prompt_index[b] (decoder-only
                                   families then run each prompt once, not once per row)
- `prompt_mask`  [B, P]    bool    False where a shorter prompt was padded to P ([N, P] for a table)
- `input_ids`    [B, L]    int32   family-formatted input tokens (see `format_input`), padded
- `input_mask`   [B, L]    bool
- `target_ids`   [B, T]    int32   family-formatted target tokens (see `format_target`), padded
- `target_mask`  [B, T]    bool

Padding may sit anywhere a mask says so: families derive positions from the masks, so a padded
row gives the same numbers as the same row alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, Sequence

import jax
import numpy as np

Params = Any  # a pytree of jax arrays: the frozen weights


class Tokenizer(Protocol):
    """Text <-> token ids, without any special tokens added."""

    vocab_size: int
    pad_id: int
    eos_id: int
    bos_id: int | None  # None for T5

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...  # special tokens skipped

    def ordinary_ids(self) -> np.ndarray:
        """Ids of ordinary tokens (not special, control, unused or byte), ascending.

        The paper's "5,000 most common tokens" are the first 5,000 of these: SentencePiece
        vocabularies are ordered by frequency.
        """
        ...


class FamilyOps(Protocol):
    """The functions a model family provides. All are pure and jit-able."""

    family: str  # "t5" | "gemma3"

    def format_input(self, ids: Sequence[int]) -> list[int]:
        """Input token ids as they enter the model (T5: + eos; Gemma 3: unchanged, <bos> is added
        by the forward in front of the prompt)."""
        ...

    def format_target(self, ids: Sequence[int]) -> list[int]:
        """Target token ids as they are scored (both families: + eos)."""
        ...

    def training_params(self, params: Params) -> Params:
        """The frozen parameters as the training step takes them: `params` plus arrays derived from
        them that make the gradient cheaper (Gemma 3: the embedding transposed). Never stored."""
        ...

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        """[..., ] int -> [..., E]: the input embeddings the prompt lives beside (Gemma 3: already
        multiplied by sqrt(d_model), so a prompt copied from `embed` equals feeding those tokens)."""
        ...

    def target_logits(self, params: Params, *, prompts: jax.Array, prompt_mask: jax.Array,
                      input_ids: jax.Array, input_mask: jax.Array, target_ids: jax.Array,
                      target_mask: jax.Array, prompt_index: jax.Array | None = None) -> jax.Array:
        """Teacher-forced logits [B, T, V]: logits[:, t] scores target_ids[:, t] given the prompt, the
        input and target_ids[:, :t]. Only these T positions are projected onto the vocabulary.

        Placement: T5 — [prompt; input] into the encoder, the encoder mask extended by prompt_mask,
        the decoder fed target_ids shifted right (decoder start = pad). Gemma 3 — [<bos>; prompt;
        input; target] causally, positions = cumsum(mask) - 1.
        """
        ...


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenModel:
    """A loaded frozen model: architecture, weights, tokenizer and fingerprint.

    `params` is never trained: softprompt passes it as a plain argument and differentiates only
    with respect to the prompt.
    """

    name: str                 # "gemma3-270m", "t5-tiny-random" or the path it was loaded from
    ops: FamilyOps
    params: Params
    tokenizer: Tokenizer
    config: dict              # the architecture config as plain JSON data (hashed into the fingerprint)
    fingerprint: str          # hex sha256 of config + weights (see core.fingerprint)

    @property
    def family(self) -> str:
        return self.ops.family

    @property
    def dtype(self) -> str:
        """The frozen weights' dtype name (`float32`, `bfloat16`)."""
        return str(self.config.get("dtype", "float32"))

    @property
    def d_model(self) -> int:
        return int(self.config["d_model"])

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(self.params)))
