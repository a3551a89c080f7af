"""Pretraining of the original model and the retrained reference: SGD, cross-entropy, cosine decay
(or, as an option, the reference pretraining's own rate).

`train_classifier` trains the original model and the retrained reference alike: SGD with momentum
and coupled L2 decay (`sgd_l2`), mean cross-entropy, train-mode BatchNorm, and a learning rate set
at the start of every epoch to ``lr * (1 + cos(pi * epoch / epochs)) / 2``. (The reference's own
pretraining overwrites the rate with a 20-epoch-period cosine and retrains with MultiStepLR; this
project uses one plain cosine for both, see the README.) Epoch ``e`` draws its batch order and
augmentation from ``np.random.default_rng([seed, e])``, so with a checkpoint directory an
interrupted run resumes bit-identically from its last finished epoch.
"""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dualoptim_jax.core import (
  MeshPlan,
  TrainState,
  checkpoint,
  init_state,
  make_step,
  train_epochs,
)
from dualoptim_jax.data import ArrayDataset, epoch_batches, num_batches
from dualoptim_jax.optim import sgd_l2
from dualoptim_jax.tasks.classification.losses import classifier_loss, cross_entropy


def cosine_epoch_schedule(base_lr: float, epochs: int, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate ``base_lr * (1 + cos(pi * e / epochs)) / 2`` at each step of epoch ``e``.

  ``e = step // steps_per_epoch``: the rate is constant within an epoch, as when the reference sets
  it at the start of every epoch.
  """
  if epochs < 1 or steps_per_epoch < 1:
    raise ValueError(
      f"epochs and steps_per_epoch must be positive, got {epochs} and {steps_per_epoch}."
    )

  def schedule(count):
    epoch = count // steps_per_epoch
    return base_lr * (1 + jnp.cos(jnp.pi * epoch / epochs)) / 2

  return schedule


def reference_epoch_schedule(base_lr: float, steps_per_epoch: int) -> optax.Schedule:
  """The reference pretraining's rate, ``base_lr * (1 + cos(pi * (e - 10) / 10)) / 2`` at epoch
  ``e`` (``main_train.py`` overwrites the rate so every epoch): a cosine of period 20 epochs, 0 at
  epochs 0, 20, 40, ... and ``base_lr`` at 10, 30, ...; a 30-epoch run ends near its peak."""
  if steps_per_epoch < 1:
    raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}.")

  def schedule(count):
    epoch = count // steps_per_epoch
    return base_lr * (1 + jnp.cos(jnp.pi * (epoch - 10) / 10)) / 2

  return schedule


SCHEDULES = ("cosine", "reference")


def _restore(directory, state: TrainState, step: int) -> TrainState:
  """Restores checkpoint ``step`` into the structure of ``state``.

  Checkpoints written before the train state had a model state and a key (fields ``params,
  batch_stats, opt_state``) are read too; they get the key of ``state``.
  """
  try:
    return checkpoint.restore(directory, state, step=step)
  except ValueError as error:
    legacy = {
      "params": state.params,
      "batch_stats": state.model_state,
      "opt_state": state.opt_state,
    }
    try:
      saved = checkpoint.restore(directory, legacy, step=step)
    except ValueError:
      raise error from None
    return TrainState(saved["params"], saved["batch_stats"], saved["opt_state"], state.rng)


def train_classifier(
  model: nnx.Module,
  dataset: ArrayDataset,
  *,
  epochs: int,
  batch_size: int = 128,
  lr: float = 0.1,
  momentum: float = 0.9,
  weight_decay: float = 5e-4,
  seed: int = 0,
  augment: bool = False,
  checkpoint_dir=None,
  progress: bool = True,
  desc: str = "train",
  plan: MeshPlan | None = None,
  schedule: str = "cosine",
) -> tuple[nnx.GraphDef, TrainState]:
  """Trains ``model`` on ``dataset`` for ``epochs`` epochs with SGD and cross-entropy.

  ``model`` gives the architecture and the initial weights and is left unchanged; build the trained
  model with ``nnx.merge(graphdef, state.params, state.model_state)``.

  With ``checkpoint_dir``, every epoch is checkpointed and a call resumes from the newest
  checkpoint there (`train_epochs`); a directory that already holds epoch ``epochs`` returns at
  once. Since the learning rate depends on ``epochs``, a run extended to more epochs matches a
  straight run only where the learning rates of the epochs already done agree.

  Args:
    model: the classifier, e.g. `ResNet18`.
    dataset: the training set.
    epochs: the number of epochs.
    batch_size: samples per step; an epoch has ``ceil(len(dataset) / batch_size)`` steps.
    lr: the peak learning rate.
    momentum: SGD momentum.
    weight_decay: L2 decay coupled into the gradients.
    seed: seeds the batch order and augmentation of every epoch.
    augment: random crop (padding 4) and horizontal flip.
    checkpoint_dir: where to save and resume from, or None.
    progress: show a tqdm progress bar over the steps.
    desc: the progress bar's label.
    plan: the device mesh to train on, or None (one device).
    schedule: ``"cosine"`` (`cosine_epoch_schedule`, from ``lr`` down to 0) or ``"reference"``
      (`reference_epoch_schedule`).

  Returns:
    The model's graph definition and the final `TrainState`.
  """
  if epochs < 1:
    raise ValueError(f"epochs must be positive, got {epochs}.")
  if schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {schedule!r}; the schedules are {SCHEDULES}.")
  steps_per_epoch = num_batches(len(dataset), batch_size)
  rate = (
    cosine_epoch_schedule(lr, epochs, steps_per_epoch)
    if schedule == "cosine"
    else reference_epoch_schedule(lr, steps_per_epoch)
  )
  tx = sgd_l2(rate, momentum=momentum, weight_decay=weight_decay)
  graphdef, state = init_state(model, tx, seed)
  if plan is not None:
    state = plan.put_state(state, tx)
  hyperparameters = {
    "num_samples": len(dataset),
    "batch_size": batch_size,
    "lr": lr,
    "momentum": momentum,
    "weight_decay": weight_decay,
    "seed": seed,
    "augment": augment,
  }
  if schedule != "cosine":  # checkpoints of the default schedule predate the field
    hyperparameters["schedule"] = schedule

  state = train_epochs(
    state,
    make_step(tx, classifier_loss(graphdef, cross_entropy), plan),
    lambda epoch: epoch_batches(
      dataset, batch_size, np.random.default_rng([seed, epoch]), augment=augment
    ),
    epochs=epochs,
    steps_per_epoch=steps_per_epoch,
    hyperparameters=hyperparameters,
    checkpoint_dir=checkpoint_dir,
    restore=_restore,
    progress=progress,
    desc=desc,
  )
  return graphdef, state
