"""Ready-made DualOptim optimizers and the shared baselines, with the reference defaults."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dualoptim_jax.optim.dual import as_schedule, dual_transform, shared_transform
from dualoptim_jax.optim.quantized_state import quantize_moments, structural
from dualoptim_jax.optim.schedules import FORGET, RETAIN

ScalarOrSchedule = float | optax.Schedule
MaskOrFn = Any | Callable[[optax.Params], Any] | None


def sgd_l2(
  learning_rate: ScalarOrSchedule, momentum: float = 0.9, weight_decay: float = 5e-4
) -> optax.GradientTransformation:
  r"""SGD with heavy-ball momentum and coupled L2 decay, as ``torch.optim.SGD`` computes it.

  .. math::
    d_t = g_t + \lambda \theta_t, \qquad b_t = \mu b_{t-1} + d_t \ (b_0 = 0), \qquad
    \theta_{t+1} = \theta_t - \eta_t b_t

  (no dampening, no Nesterov; PyTorch's first step ``b_1 = d_1`` equals :math:`\mu \cdot 0 + d_1`).
  """
  return optax.chain(
    optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum)
  )


def dualoptim(
  forget_lr: ScalarOrSchedule,
  retain_lr: ScalarOrSchedule,
  *,
  forget_b1: float = 0.9,
  forget_b2: float = 0.999,
  forget_eps: float = 1e-8,
  forget_weight_decay: float = 0.05,
  retain_momentum: float = 0.9,
  retain_weight_decay: float = 5e-4,
) -> optax.GradientTransformationExtraArgs:
  r"""DualOptim for classification: AdamW forgets, SGD with momentum retains, separate states.

  Forget (AdamW, decoupled decay on the pre-update weights, :math:`t` = forget steps so far):

  .. math::
    m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
    \theta \leftarrow \theta - \eta_f \Big(\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}
    + \lambda_f \theta\Big)

  Retain: :func:`sgd_l2` with ``retain_momentum`` and ``retain_weight_decay``. A schedule given as
  a learning rate counts the steps of its own objective.

  Returns:
    ``dual_transform({"forget": ..., "retain": ...})``.
  """
  forget = optax.adamw(
    forget_lr, b1=forget_b1, b2=forget_b2, eps=forget_eps, weight_decay=forget_weight_decay
  )
  return dual_transform(
    {
      FORGET: forget,
      RETAIN: sgd_l2(retain_lr, momentum=retain_momentum, weight_decay=retain_weight_decay),
    }
  )


def shared_sgd(
  forget_lr: ScalarOrSchedule,
  retain_lr: ScalarOrSchedule,
  *,
  momentum: float = 0.9,
  weight_decay: float = 5e-4,
) -> optax.GradientTransformationExtraArgs:
  """The ``--optim sgd`` baseline: one :func:`sgd_l2` state, the learning rate set per objective."""
  return shared_transform(
    sgd_l2, {FORGET: forget_lr, RETAIN: retain_lr}, momentum=momentum, weight_decay=weight_decay
  )


def shared_adamw(
  forget_lr: ScalarOrSchedule,
  retain_lr: ScalarOrSchedule,
  *,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.05,
) -> optax.GradientTransformationExtraArgs:
  """The ``--optim adam`` baseline: one AdamW state, learning rate switched per objective."""
  return shared_transform(
    optax.adamw,
    {FORGET: forget_lr, RETAIN: retain_lr},
    b1=b1,
    b2=b2,
    eps=eps,
    weight_decay=weight_decay,
  )


def _decay_mask(mask: MaskOrFn, params: optax.Params):
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  return mask(params) if callable(mask) else mask


def dualoptim_llm(
  learning_rate: ScalarOrSchedule,
  forget_lr_ratio: float = 1.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.01,
  *,
  mask: MaskOrFn = None,
  max_grad_norm: float | None = None,
  state_bits: int | None = None,
  block_size: int | None = None,
  min_8bit_size: int | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""DualOptim for language models: two AdamW states on one global learning-rate schedule.

  At global step :math:`T` (forget and retain steps both count) with objective :math:`k`,
  :math:`t_k` its own step count and :math:`\eta(\cdot)` the schedule evaluated at :math:`T-1`:

  .. math::
    \eta_k = r_k\, \eta(T-1), \quad
    r_\text{forget} = \texttt{forget\_lr\_ratio}, \ r_\text{retain} = 1

    m_k \leftarrow \beta_1 m_k + (1-\beta_1) g, \qquad v_k \leftarrow \beta_2 v_k + (1-\beta_2) g^2

    \theta \leftarrow \Big(\theta - \eta_k \frac{m_k/(1-\beta_1^{t_k})}
    {\sqrt{v_k/(1-\beta_2^{t_k})} + \epsilon}\Big)(1 - \eta_k \lambda)

  The decoupled decay comes AFTER the Adam step, as the authors' CUDA kernel computes it (optax's
  and PyTorch's AdamW decay the pre-update weights; the two differ by
  :math:`\eta^2 \lambda |u|` per step). ``mask`` (optax convention: a tree of booleans or a
  function of the params) selects the leaves that decay; the reference decays all but biases and
  norm weights. ``max_grad_norm`` clips by global norm before the update (1.0 in the reference).

  Args:
    learning_rate: the retain learning rate, a float or an Optax schedule of the global step.
    forget_lr_ratio: forget learning rate / retain learning rate.
    b1, b2, eps: Adam hyper-parameters, shared by both objectives.
    weight_decay: decoupled decay rate :math:`\lambda`.
    mask: which leaves decay.
    max_grad_norm: global-norm clipping threshold, or None.
    state_bits: 32 (None) or 8 to keep each objective's Adam moments in 8-bit blockwise form (signed
      dynamic map for m, unsigned for v) on leaves with at least ``min_8bit_size`` elements.
    block_size: elements per quantization block (None: 256).
    min_8bit_size: smaller leaves keep unquantized moments (None: 4096).

  The last three are structural (``STRUCTURAL_ARGS``): under ``optax.inject_hyperparams`` leave
  them None or declare them static. A mask given as a function must be declared static there too,
  as for ``optax.adamw``.

  Returns:
    A transform with ``update(updates, state, params, *, objective)``.
  """
  state_bits = structural("state_bits", state_bits)
  block_size = structural("block_size", block_size)
  min_8bit_size = structural("min_8bit_size", min_8bit_size)
  schedule = as_schedule(learning_rate)
  ratios = {FORGET: forget_lr_ratio, RETAIN: 1.0}

  def moments():
    adam = optax.scale_by_adam(b1, b2, eps)
    if state_bits == 8:
      return quantize_moments(adam, block_size=block_size, min_8bit_size=min_8bit_size)
    return adam

  adam = dual_transform({k: moments() for k in ratios})

  def update_fn(updates, state, params=None, *, objective=None, **extra_args):
    if params is None:
      raise ValueError("dualoptim_llm needs the params to apply its weight decay.")
    directions, new_state = adam.update(updates, state, params, objective=objective, **extra_args)
    lr = ratios[objective] * schedule(state.count)

    def step(u, p, decays):
      lr_p = jnp.asarray(lr, p.dtype)
      u = lr_p * u.astype(p.dtype)
      return -(u + lr_p * weight_decay * (p - u)) if decays else -u

    updates = jax.tree.map(step, directions, params, _decay_mask(mask, params))
    return updates, new_state

  tx = optax.GradientTransformationExtraArgs(adam.init, update_fn)
  if max_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
  return tx


def shared_adamw_llm(
  learning_rate: ScalarOrSchedule,
  forget_lr_ratio: float = 1.0,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  weight_decay: float = 0.01,
  *,
  mask: MaskOrFn = None,
  max_grad_norm: float | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The LLM shared baseline: one ``optax.adamw`` state for both objectives (decay before the step).

  Both objectives follow ``learning_rate`` on the global step, the forget steps scaled by
  ``forget_lr_ratio``. The reference's default trainer optimizer ignores its forget learning rate:
  that is ``forget_lr_ratio=1``.
  """
  schedule = as_schedule(learning_rate)
  tx = shared_transform(
    optax.adamw,
    {FORGET: lambda count: forget_lr_ratio * schedule(count), RETAIN: schedule},
    b1=b1,
    b2=b2,
    eps=eps,
    weight_decay=weight_decay,
    mask=mask,
  )
  if max_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
  return tx
