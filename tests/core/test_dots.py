"""The frozen models' matmuls: bfloat16 weights multiply with float32 accumulation, forward and
backward, and never get upcast to float32 on the way."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.models.dots import dense, einsum, tied_logits


@pytest.fixture(scope="module")
def operands():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 64)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(64, 4, 32)) / 8, jnp.float32)
    return x, w


def test_float32_weights_are_a_plain_einsum(operands):
    x, w = operands
    expected = jnp.einsum("bse,enh->bsnh", x, w)
    np.testing.assert_allclose(einsum("bse,enh->bsnh", x, w), expected, rtol=1e-6)
    np.testing.assert_allclose(dense(x, w), expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_weights_give_float32_close_to_the_exact_product(operands):
    x, w = operands
    low = dense(x, w.astype(jnp.bfloat16))
    assert low.dtype == jnp.float32 and low.shape == (3, 5, 4, 32)
    exact = jnp.einsum("bse,enh->bsnh", x.astype(jnp.bfloat16).astype(jnp.float32),
                       w.astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_allclose(low, exact, rtol=1e-5, atol=1e-5)  # only the inputs were rounded


def test_bfloat16_backward_matches_the_float32_gradient(operands):
    x, w = operands
    cotangent = jnp.sin(jnp.arange(3 * 5 * 4 * 32, dtype=jnp.float32)).reshape(3, 5, 4, 32)

    def loss(x, w):
        return jnp.sum(dense(x, w) * cotangent)

    exact_x, exact_w = jax.grad(loss, argnums=(0, 1))(x, w)
    low_x, low_w = jax.grad(loss, argnums=(0, 1))(x, w.astype(jnp.bfloat16))
    assert low_x.dtype == jnp.float32 and low_w.dtype == jnp.bfloat16
    np.testing.assert_allclose(low_x, exact_x, rtol=0.05, atol=0.05 * float(jnp.abs(exact_x).max()))
    np.testing.assert_allclose(low_w.astype(jnp.float32), exact_w, rtol=0.05,
                               atol=0.05 * float(jnp.abs(exact_w).max()))


def test_the_backward_pass_never_upcasts_the_weights(operands):
    """The point of the module: with jnp.einsum(preferred_element_type=float32) alone, XLA's
    backward pass converts the bfloat16 weights to a float32 copy (the slow matmul path)."""
    x, w = operands
    weights = w.reshape(64, 128).astype(jnp.bfloat16)

    def compiled_gradient(product):  # the weights an argument, as the frozen parameters are
        gradient = jax.grad(lambda x, weights: jnp.sum(jnp.tanh(product(x, weights))))
        return jax.jit(gradient).lower(x, weights).compile().as_text()

    ours = compiled_gradient(lambda x, w: einsum("bse,ef->bsf", x, w))
    automatic = compiled_gradient(lambda x, w: jnp.einsum("bse,ef->bsf", x.astype(jnp.bfloat16), w,
                                                          preferred_element_type=jnp.float32))
    upcast_weights = re.compile(r"f32\[64,128\]")
    assert upcast_weights.search(automatic)  # the failure this module exists to avoid
    assert not upcast_weights.search(ours)


def test_dense_names_shapes_that_do_not_contract(operands):
    x, w = operands
    with pytest.raises(ValueError, match=r"cannot contract \(3, 5, 64\) with \(4, 32, 64\)"):
        dense(x, w.transpose(1, 2, 0))
    assert dense(x.reshape(3, 5, 4, 16), w.reshape(4, 16, 128), contract=2).shape == (3, 5, 128)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tied_logits_backward_through_the_transposed_copy_is_the_same_gradient(dtype):
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.normal(size=(2, 3, 48)), jnp.float32)
    embedding = jnp.asarray(rng.normal(size=(500, 48)) / 7, dtype)
    target = jnp.asarray(rng.integers(0, 500, size=(2, 3)))

    def loss(hidden, transposed):
        logits = tied_logits(hidden, embedding, transposed)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], axis=-1))

    plain_value, plain_grad = jax.value_and_grad(loss)(hidden, None)
    value, grad = jax.value_and_grad(loss)(hidden, jnp.transpose(embedding))
    assert tied_logits(hidden, embedding).shape == (2, 3, 500) and grad.dtype == jnp.float32
    np.testing.assert_allclose(value, plain_value, rtol=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5, atol=1e-7)
