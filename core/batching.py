"""Text pairs -> padded token arrays, with length bucketing.

Every batch is padded to a bucket length (powers of two from 8 and the midpoints 1.5 times them:
8, 12, 16, 24, 32, 48, ...), so a run compiles a handful of shapes rather than one per batch, and
padding stays under a third of a row (powers of two alone pad up to half of it). Inputs longer
than the task's limit are truncated (and say so).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .models.base import FrozenModel

SMALLEST_BUCKET = 8


class EncodedPair(NamedTuple):
    input_ids: list[int]   # family-formatted (T5: ends with eos)
    target_ids: list[int]  # family-formatted (ends with eos)
    truncated: bool        # the input was cut to the length limit


class Batch(NamedTuple):
    """Padded arrays for one forward pass.

    input_ids, input_mask:   [B, L]
    target_ids, target_mask: [B, T]
    prompt_index:            [B] int32, which prompt of the table each row uses
    """

    input_ids: np.ndarray
    input_mask: np.ndarray
    target_ids: np.ndarray
    target_mask: np.ndarray
    prompt_index: np.ndarray


def bucket_length(length: int, *, cap: int | None = None) -> int:
    """The smallest bucket >= length — a power of two or 1.5 times one, at least SMALLEST_BUCKET —
    never above `cap`.

    >>> [bucket_length(n) for n in (1, 9, 13, 33, 49, 100)]
    [8, 12, 16, 48, 64, 128]
    """
    power = max(SMALLEST_BUCKET, 1 << max(0, length - 1).bit_length())
    bucket = power * 3 // 4 if power > SMALLEST_BUCKET and length <= power * 3 // 4 else power
    return min(bucket, cap) if cap else bucket


def _formatted(format_fn, ids: list[int], limit: int) -> tuple[list[int], bool]:
    """format_fn(ids) cut to `limit` tokens by shortening the raw ids (keeping eos and the like)."""
    formatted = format_fn(ids)
    overflow = len(formatted) - limit
    if overflow <= 0:
        return formatted, False
    return format_fn(ids[: max(0, len(ids) - overflow)]), True


def encode_pair(model: FrozenModel, inputs: str, targets: str, *, max_input_tokens: int,
                max_target_tokens: int) -> EncodedPair:
    """Tokenise and format one input/target text pair for `model`'s family."""
    tokenizer, ops = model.tokenizer, model.ops
    input_ids, truncated = _formatted(ops.format_input, tokenizer.encode(inputs), max_input_tokens)
    target_ids, _ = _formatted(ops.format_target, tokenizer.encode(targets), max_target_tokens)
    return EncodedPair(input_ids, target_ids, truncated)


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows right-padded (or cut) to `length`: (ids [R, length] int32, mask [R, length] bool)."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row[:length]
        mask[i, : len(row)] = True
    return ids, mask


def make_batch(pairs: Sequence[EncodedPair], *, pad_id: int, prompt_index: Sequence[int] | None = None,
               rows: int | None = None) -> Batch:
    """Right-pads `pairs` to bucket lengths; with `rows`, adds empty rows up to that batch size
    (fully masked targets, prompt 0) so the batch dimension is fixed too."""
    rows = rows or len(pairs)
    if rows < len(pairs):
        raise ValueError(f"{len(pairs)} pairs do not fit in a batch of {rows} rows")
    filler = EncodedPair(pairs[0].input_ids[:1], [], False)
    padded = list(pairs) + [filler] * (rows - len(pairs))
    input_ids, input_mask = pad_rows([p.input_ids for p in padded],
                                     bucket_length(max(len(p.input_ids) for p in pairs)), pad_id)
    target_ids, target_mask = pad_rows([p.target_ids for p in padded],
                                       bucket_length(max(len(p.target_ids) for p in pairs)), pad_id)
    index = np.zeros(rows, np.int32)
    if prompt_index is not None:
        index[: len(pairs)] = prompt_index
    return Batch(input_ids, input_mask, target_ids, target_mask, index)
