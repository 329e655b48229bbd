"""The frozen models' matmuls: activations stay float32, and a product with bfloat16 weights
multiplies in bfloat16 with float32 accumulation — forward and backward.

On CPUs with AMX (and on GPUs/TPUs), XLA runs a bfloat16 product on the matrix units only when it is
asked for a float32 result; a bfloat16 result takes a slow upcasting path (several times slower;
figures in docs/results.md). `jnp.einsum(..., preferred_element_type=float32)`
alone is not enough for training: its automatic transpose multiplies the float32 cotangent by the
bfloat16 weights, which XLA does by upcasting the weights to float32 — the slow path again, on every
backward pass. So the backward pass is written out here: the cotangent is rounded to bfloat16 and
each transpose is again a bfloat16 product with a float32 result.

Activations (and so norms, rotary, softmax, GeGLU and the residual stream) stay float32: XLA's CPU
elementwise code upcasts bfloat16 anyway, and rounding between layers only loses precision.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def einsum(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, x, y)` as float32. With bfloat16 weights `y`, x is rounded to bfloat16 and
    the product accumulates in float32. `spec` is explicit ("ab,bc->ac"), and every index of an
    operand appears in the other operand or in the output (no traces), so the transposes are
    einsums too."""
    x = x.astype(jnp.float32)
    if y.dtype == jnp.float32:
        return jnp.einsum(spec, x, y)
    return _low_precision_einsum(spec, x, y)


def _product(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.einsum(spec, x, y, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _low_precision_einsum(spec: str, x: jax.Array, y: jax.Array) -> jax.Array:
    """x float32, y bfloat16 -> float32."""
    return _forward(spec, x, y)[0]


def _forward(spec, x, y):
    x = x.astype(y.dtype)
    return _product(spec, x, y), (x, y)


def _backward(spec, residuals, cotangent):
    """d/dx = cotangent . y and d/dy = x . cotangent, as einsums over the same indices. Unused
    ones (the frozen weights' gradient) are removed by XLA's dead-code elimination."""
    x, y = residuals
    inputs, out = spec.split("->")
    x_indices, y_indices = inputs.split(",")
    cotangent = cotangent.astype(y.dtype)
    return (_product(f"{out},{y_indices}->{x_indices}", cotangent, y),  # float32, as x was
            _product(f"{x_indices},{out}->{y_indices}", x, cotangent).astype(y.dtype))


_low_precision_einsum.defvjp(_forward, _backward)


def dense(x: jax.Array, w: jax.Array, contract: int = 1) -> jax.Array:
    """x [..., *K] . w [*K, *N] -> [..., *N] (float32), contracting the last `contract` axes of x
    with the first of w, as one 2-D product: [M, prod K] x [prod K, prod N]. Fed to XLA in this form,
    the backward pass multiplies by the weights in place; with the heads as separate axes
    (`bse,enh->bsnh`) it copies a transposed weight matrix first, every step."""
    k_shape, n_shape = w.shape[:contract], w.shape[contract:]
    if x.shape[x.ndim - contract:] != k_shape:
        raise ValueError(f"cannot contract {x.shape} with {w.shape} over {contract} axes")
    rows = x.reshape(-1, math.prod(k_shape))
    out = einsum("mk,kn->mn", rows, w.reshape(math.prod(k_shape), math.prod(n_shape)))
    return out.reshape(*x.shape[:x.ndim - contract], *n_shape)


def tied_logits(x: jax.Array, embedding: jax.Array, transposed: jax.Array | None = None) -> jax.Array:
    """x [..., E] . embedding [V, E]^T -> logits [..., V] float32 (a tied output projection).

    `transposed` [E, V], the same matrix laid out the other way, serves only the backward pass:
    x's gradient, cotangent [M, V] . embedding, is a product over the 262k-long vocabulary, and XLA's
    CPU kernels run it much faster with the vocabulary as the contiguous axis of the larger operand.
    Without it
    the backward pass multiplies by `embedding` itself.
    """
    rows = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    if transposed is None:
        logits = einsum("me,ve->mv", rows, embedding)
    else:
        logits = _tied_logits(rows, embedding, transposed)
    return logits.reshape(*x.shape[:-1], embedding.shape[0])


@jax.custom_vjp
def _tied_logits(x: jax.Array, embedding: jax.Array, transposed: jax.Array) -> jax.Array:
    """x [M, E] float32 -> [M, V] float32."""
    return _tied_forward(x, embedding, transposed)[0]


def _tied_forward(x, embedding, transposed):
    x = x.astype(embedding.dtype)
    return _product("me,ve->mv", x, embedding), (x, embedding, transposed)


def _tied_backward(residuals, cotangent):
    """x's gradient from `transposed` ([E, V] . [M, V] -> [E, M], a small transpose after); the
    embedding's as usual (removed by dead-code elimination when the weights are frozen);
    `transposed` is not used by the forward pass, so its gradient is zero."""
    x, embedding, transposed = residuals
    cotangent = cotangent.astype(embedding.dtype)
    # The barrier keeps XLA from folding the transpose into the product (swapping its operands
    # back into the slow orientation).
    return (jax.lax.optimization_barrier(_product("ev,mv->em", transposed, cotangent)).T,
            _product("me,mv->ve", x, cotangent).astype(embedding.dtype),
            jnp.zeros_like(transposed))


_tied_logits.defvjp(_tied_forward, _tied_backward)
