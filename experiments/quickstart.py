"""Unlearning in one page: random-label unlearning of a small MLP on scikit-learn's digits.

Trains an MLP on 90% of the digits, forgets a random 10% of its training set with the RL method
(random labels on the forget set, cross-entropy on the retain set; per epoch all forget steps, then
all retain steps), once with one shared SGD state and once with DualOptim (AdamW forgets, SGD
retains, separate states), and compares both with a model retrained on the retain set alone.

Run: python experiments/quickstart.py
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import dualoptim_jax as dj


def init_mlp(key, sizes=(64, 256, 10)):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
    {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
    for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]


def logits_fn(params, x):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, x), y).mean()


def make_step(tx):
  @functools.partial(jax.jit, static_argnames="objective", donate_argnums=(0, 1))
  def step(params, state, x, y, objective):
    grads = jax.grad(loss_fn)(params, x, y)
    updates, state = tx.update(grads, state, params, objective=objective)
    return optax.apply_updates(params, updates), state

  return step


def batches(rng, n, batch_size):
  order = rng.permutation(n)
  return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def train(params, tx, x, y, epochs, seed):
  step, state, rng = make_step(tx), tx.init(params), np.random.default_rng(seed)
  for _ in range(epochs):
    for idx in batches(rng, len(x), 32):
      params, state = step(params, state, x[idx], y[idx], objective="retain")
  return params


def unlearn_rl(params, tx, forget, retain, epochs, seed):
  """Per epoch: every forget batch with fresh uniform random labels, then every retain batch."""
  step, state, rng = make_step(tx), tx.init(params), np.random.default_rng(seed)
  (xf, _), (xr, yr) = forget, retain
  for _ in range(epochs):
    for idx in batches(rng, len(xf), 32):
      random_labels = rng.integers(0, 10, len(idx))
      params, state = step(params, state, xf[idx], random_labels, objective="forget")
    for idx in batches(rng, len(xr), 32):
      params, state = step(params, state, xr[idx], yr[idx], objective="retain")
  return params


def accuracy(params, x, y):
  return 100.0 * float(jnp.mean(jnp.argmax(logits_fn(params, x), -1) == y))


def main():
  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  rng = np.random.RandomState(0)
  order = rng.permutation(len(x))
  test, train_idx = order[:180], order[180:]
  forget_idx = rng.choice(train_idx, len(train_idx) // 10, replace=False)
  retain_idx = np.setdiff1d(train_idx, forget_idx)
  data = {
    name: (x[idx], y[idx])
    for name, idx in [("forget", forget_idx), ("retain", retain_idx), ("test", test)]
  }

  pretrain = dj.shared_sgd(0.05, 0.05)
  original = train(
    init_mlp(jax.random.key(0)), pretrain, x[train_idx], y[train_idx], epochs=40, seed=0
  )
  retrained = train(init_mlp(jax.random.key(0)), pretrain, *data["retain"], epochs=40, seed=0)
  copy = lambda p: jax.tree.map(jnp.copy, p)  # noqa: E731  (steps donate their params)
  models = {
    "original": original,
    "retrained": retrained,
    "RL, shared SGD": unlearn_rl(
      copy(original), dj.shared_sgd(0.02, 0.01), data["forget"], data["retain"], epochs=5, seed=1
    ),
    "RL, DualOptim": unlearn_rl(
      copy(original), dj.dualoptim(3e-4, 0.01), data["forget"], data["retain"], epochs=5, seed=1
    ),
  }
  print(f"{'model':16s} {'forget acc':>10s} {'retain acc':>10s} {'test acc':>9s}")
  for name, params in models.items():
    accs = [accuracy(params, *data[s]) for s in ("forget", "retain", "test")]
    print(f"{name:16s} {accs[0]:10.1f} {accs[1]:10.1f} {accs[2]:9.1f}")


if __name__ == "__main__":
  main()
