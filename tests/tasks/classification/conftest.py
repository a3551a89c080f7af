"""A small synthetic unlearning problem shared by the unlearn tests.

Ten classes, each a fixed random 8x8x3 prototype plus noise. The forget set is 10% of the training
pool with WRONG labels: a model trained on the pool must memorise them (high forget accuracy),
while a model trained on the retain set alone predicts the prototypes' classes (forget accuracy
near 0). Unlearning has to move the forget accuracy from the first towards the second.
"""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from dualoptim_jax.core import init_state, make_step
from dualoptim_jax.data import ArrayDataset, epoch_batches, make_split, to_float
from dualoptim_jax.tasks.classification.losses import classifier_loss, cross_entropy
from dualoptim_jax.tasks.classification.metrics import predict


class TinyNet(nnx.Module):
  """Flatten -> Dense(64) -> BatchNorm -> ReLU -> Dense(classes)."""

  def __init__(self, num_classes, rngs):
    self.hidden = nnx.Linear(8 * 8 * 3, 64, rngs=rngs)
    self.bn = nnx.BatchNorm(64, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.out = nnx.Linear(64, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.hidden(x.reshape(x.shape[0], -1) - 0.5)))
    return self.out(x)


class BareNet(nnx.Module):
  """The tiny classifier of the classification tests without the bias before its BatchNorm: that
  bias has a zero gradient, and Adam would turn the float noise in it into full-size steps."""

  def __init__(self, num_classes, rngs):
    self.hidden = nnx.Linear(8 * 8 * 3, 64, use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(64, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.out = nnx.Linear(64, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.out(nnx.relu(self.bn(self.hidden(x.reshape(x.shape[0], -1) - 0.5))))


def bare_net():
  return BareNet(10, nnx.Rngs(jax.random.key(0, impl="rbg")))


def make_data(seed=0, n=400, n_test=200, classes=10):
  rng = np.random.default_rng(seed)
  prototypes = rng.integers(0, 256, (classes, 8, 8, 3))

  def sample(count):
    labels = rng.integers(0, classes, count)
    noise = rng.normal(0, 40, (count, 8, 8, 3))
    return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.int32)

  images, labels = sample(n)
  forget_idx = rng.choice(n, n // 10, replace=False)
  labels[forget_idx] = (labels[forget_idx] + rng.integers(1, classes, n // 10)) % classes
  pool = ArrayDataset(images, labels, classes, (0.5,) * 3, (0.25,) * 3, "synthetic")
  test = ArrayDataset(*sample(n_test), classes, (0.5,) * 3, (0.25,) * 3, "synthetic")
  return pool, make_split(pool, test, forget_idx)


def train(data, epochs=60, seed=0, lr=0.05):
  model = TinyNet(data.num_classes, nnx.Rngs(jax.random.key(seed, impl="rbg")))
  tx = optax.sgd(lr, momentum=0.9)
  graphdef, state = init_state(model, tx, seed)
  step = make_step(tx, classifier_loss(graphdef, cross_entropy))
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    for batch in epoch_batches(data, 32, rng):
      state, _ = step(state, batch)
  return graphdef, state


def accuracy(graphdef, state, data):
  logits = predict(graphdef, state.params, state.model_state, to_float(data.images))
  return 100.0 * float(np.mean(np.argmax(logits, -1) == data.labels))


@pytest.fixture(scope="session")
def problem():
  """(graphdef, original state, retrained state, split)."""
  pool, split = make_data()
  graphdef, original = train(pool)
  _, retrained = train(split.retain)
  return graphdef, original, retrained, split
