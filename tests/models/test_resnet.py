"""Tests for the CIFAR ResNet-18."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dualoptim_jax.models import ResNet18, apply

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _model(width=8, mean=MEAN, std=STD):
  # Same key, same shapes: parameters are identical whatever mean / std are. The
  # "rbg" key compiles its random ops far faster on CPU than the default threefry.
  rngs = nnx.Rngs(jax.random.key(0, impl="rbg"))
  return ResNet18(10, width=width, mean=mean, std=std, rngs=rngs)


@nnx.jit
def _forward(model, x):
  return model(x)


@pytest.fixture(scope="module")
def _base():
  return _model()


@pytest.fixture
def model(_base):
  return nnx.clone(_base)


def _images(n=2, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


def _leaves(state):
  return jax.tree.leaves(state)


def _size(state):
  return sum(x.size for x in _leaves(state))


def test_parameter_count_matches_torch_resnet18():
  model = nnx.eval_shape(lambda: _model(width=64))
  # torchvision-style CIFAR resnet18, 10 classes: sum(p.numel() for p in model.parameters()).
  assert _size(nnx.state(model, nnx.Param)) == 11_173_962
  # Running mean and variance of the 20 BatchNorms: 2 * (64 + 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512).
  assert _size(nnx.state(model, nnx.BatchStat)) == 9_600


def test_normalisation_constants_are_not_state():
  model = nnx.eval_shape(lambda: _model(width=64))
  _, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  assert len(_leaves(nnx.state(model))) == len(_leaves(params)) + len(_leaves(batch_stats))


def test_output_shape(model):
  assert _forward(model, _images()).shape == (2, 10)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(mean=(0.5,) * 3, std=(0.5,) * 2), "equal length"),
    (dict(mean=(), std=()), "non-empty"),
    (dict(mean=(0.5,) * 3, std=(0.5, 0.0, 0.5)), "std must be positive"),
    (dict(width=0), "width must be positive"),
  ],
)
def test_bad_arguments(kwargs, message):
  kwargs = dict(width=8, mean=MEAN, std=STD) | kwargs
  with pytest.raises(ValueError, match=message):
    ResNet18(10, rngs=nnx.Rngs(0), **kwargs)


def test_bad_input_shape(model):
  with pytest.raises(ValueError, match="3 channels"):
    model(jnp.zeros((2, 16, 16, 1)))


def test_normalisation_is_applied(model):
  # (x - mean) / std == (x' - mean') / std' for x' = (x - mean) / std * std' + mean'.
  mean2, std2 = (0.1, 0.7, 0.3), (0.5, 0.9, 2.0)
  shifted = _model(mean=mean2, std=std2)
  model.eval()
  shifted.eval()
  x = _images()
  x2 = (x - jnp.array(MEAN)) / jnp.array(STD) * jnp.array(std2) + jnp.array(mean2)
  logits = _forward(model, x)
  np.testing.assert_allclose(logits, _forward(shifted, x2), rtol=1e-4, atol=1e-5)
  assert not np.allclose(logits, _forward(shifted, x), atol=1e-3)


def test_initialisation(model):
  # Kaiming normal, fan_out, untruncated: std = sqrt(2 / (3 * 3 * 64)) for the last 64 -> 64 conv.
  kernel = np.asarray(model.blocks[-1].conv2.kernel[...])
  assert kernel.shape == (3, 3, 64, 64)
  expected = math.sqrt(2.0 / (3 * 3 * 64))
  assert abs(kernel.std() / expected - 1) < 0.03
  assert abs(kernel.mean()) < 0.01 * expected
  assert np.abs(kernel).max() > 3 * expected  # jax's truncated normal stops at 2 std.
  # torch Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
  bound = 1 / math.sqrt(64)
  for w in (model.fc.kernel[...], model.fc.bias[...]):
    assert np.abs(w).max() <= bound
  assert np.abs(model.fc.kernel[...]).max() > 0.9 * bound
  np.testing.assert_array_equal(model.bn1.scale[...], 1.0)
  np.testing.assert_array_equal(model.bn1.bias[...], 0.0)


def test_train_mode_updates_running_stats_and_eval_mode_does_not(model):
  x = _images()
  stats0 = nnx.clone(nnx.state(model, nnx.BatchStat))
  model.eval()
  _forward(model, x)
  jax.tree.map(np.testing.assert_array_equal, nnx.state(model, nnx.BatchStat), stats0)

  model.train()
  h = model.conv1((x - jnp.array(MEAN)) / jnp.array(STD))
  _forward(model, x)
  # r <- 0.9 r + 0.1 batch_mean, from r = 0.
  np.testing.assert_allclose(
    model.bn1.mean[...], 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-7
  )
  changed = jax.tree.map(
    lambda a, b: not np.allclose(a, b), nnx.state(model, nnx.BatchStat), stats0
  )
  assert all(_leaves(changed))


def test_apply_functional_split(model):
  x = _images()
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  stats0 = nnx.clone(batch_stats)

  logits, new_stats = apply(graphdef, params, batch_stats, x, train=False)
  jax.tree.map(np.testing.assert_array_equal, new_stats, stats0)
  model.eval()
  np.testing.assert_allclose(logits, _forward(model, x), rtol=1e-5, atol=1e-6)

  logits, new_stats = apply(graphdef, params, batch_stats, x, train=True)
  jax.tree.map(np.testing.assert_array_equal, batch_stats, stats0)  # inputs untouched
  model.train()
  np.testing.assert_allclose(logits, _forward(model, x), rtol=1e-5, atol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    new_stats,
    nnx.state(model, nnx.BatchStat),
  )
  merged = nnx.merge(graphdef, params, new_stats)
  np.testing.assert_array_equal(merged.bn1.mean[...], new_stats["bn1"]["mean"][...])
