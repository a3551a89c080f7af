"""Fine-tuning a decoder LM on QA until it has memorised them (TOFU's target and retain models).

The recipe: AdamW (decoupled weight decay on matrices only, as Hugging Face exempts biases and
norm scales), global-norm clipping, a linear warm-up to ``lr`` then a cosine decay to
``end_lr_ratio * lr``, next-token NLL on the answer tokens. Epoch ``e`` draws its batch order
from ``np.random.default_rng([seed, e])``, so an interrupted run resumes bit-identically.
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx

from dualoptim_jax.core import MeshPlan, TrainState, init_state, make_step, train_epochs
from dualoptim_jax.data.tofu import bucket_batches, num_bucket_batches
from dualoptim_jax.tasks.llm.losses import lm_loss

Example = tuple[np.ndarray, np.ndarray]  # token ids and labels (`data.tofu.encode_qa`)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """The fine-tuning recipe (defaults: the CPU-scale one, see the README).

  The learning rate follows its schedule over ``epochs`` epochs; a run with a stopping condition
  (``finetune_lm(until=...)``) may then go on at the final rate, up to ``max_epochs``.
  """

  epochs: int = 20
  max_epochs: int | None = None
  batch_size: int = 16
  lr: float = 2e-3
  warmup_steps: int = 25
  end_lr_ratio: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.95
  max_grad_norm: float = 1.0
  buckets: tuple[int, ...] = (64, 80, 96, 128)
  seed: int = 0

  def __post_init__(self):
    if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
      raise ValueError(f"epochs, batch_size and lr must be positive in {self}.")
    if self.max_epochs is not None and self.max_epochs < self.epochs:
      raise ValueError(f"max_epochs {self.max_epochs} is below epochs {self.epochs}.")


def finetune_tx(config: FinetuneConfig, total_steps: int) -> optax.GradientTransformation:
  """Clipping, then AdamW on the warm-up-cosine schedule, decaying only arrays of rank >= 2."""
  schedule = optax.warmup_cosine_decay_schedule(
    0.0,
    config.lr,
    min(config.warmup_steps, total_steps - 1),
    total_steps,
    end_value=config.lr * config.end_lr_ratio,
  )
  return optax.chain(
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adamw(
      schedule,
      b1=config.b1,
      b2=config.b2,
      weight_decay=config.weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
    ),
  )


def finetune_lm(
  model: nnx.Module,
  examples: list[Example],
  config: FinetuneConfig,
  *,
  pad_id: int,
  checkpoint_dir=None,
  until: Callable[[nnx.Module], bool] | None = None,
  progress: bool = True,
  desc: str = "fine-tune",
  plan: MeshPlan | None = None,
) -> tuple[nnx.GraphDef, TrainState]:
  """Fine-tunes ``model`` (left unchanged) on ``examples`` for ``config.epochs`` epochs, then,
  while ``until(trained model)`` is False, one more at a time up to ``config.max_epochs``.

  With ``checkpoint_dir`` every epoch is checkpointed and a call resumes from the newest checkpoint
  there (`core.train_epochs`). Build the trained model with ``nnx.merge(graphdef, state.params,
  state.model_state)``. With a ``plan``, training runs on its device mesh.
  """
  if not examples:
    raise ValueError("Cannot fine-tune on an empty set of examples.")
  lengths = [len(ids) for ids, _ in examples]
  steps_per_epoch = num_bucket_batches(lengths, config.batch_size, config.buckets)
  tx = finetune_tx(config, config.epochs * steps_per_epoch)
  graphdef, state = init_state(model, tx, config.seed)
  if plan is not None:
    state = plan.put_state(state, tx)
  hyperparameters = {  # max_epochs is a stopping rule: it changes no epoch's training
    **{k: v for k, v in dataclasses.asdict(config).items() if k != "max_epochs"},
    "buckets": list(config.buckets),
    "num_examples": len(examples),
    "num_tokens": int(sum(lengths)),
  }

  def epoch_batches(epoch):
    rng = np.random.default_rng([config.seed, epoch])
    for batch in bucket_batches(examples, config.batch_size, config.buckets, pad_id, rng):
      yield {"input_ids": batch["input_ids"], "labels": batch["labels"]}

  state = train_epochs(
    state,
    make_step(tx, lm_loss(graphdef), plan),
    epoch_batches,
    epochs=config.epochs,
    steps_per_epoch=steps_per_epoch,
    hyperparameters=hyperparameters,
    checkpoint_dir=checkpoint_dir,
    until=None if until is None else lambda s: until(nnx.merge(graphdef, s.params, s.model_state)),
    max_epochs=config.max_epochs,
    progress=progress,
    desc=desc,
  )
  return graphdef, state
