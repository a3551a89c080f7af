"""DualOptim+: a shared base Adam state plus per-objective delta states, in 32 or 8 bits."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from dualoptim_jax.optim.dual import _check_objective, as_schedule, check_same_structure
from dualoptim_jax.optim.quantized_state import is_quantized, load, store, structural
from dualoptim_jax.optim.recipes import MaskOrFn, ScalarOrSchedule, _decay_mask
from dualoptim_jax.optim.schedules import FORGET, RETAIN


class DeltaState(NamedTuple):
  """One objective's delta moments and its own step count :math:`t_k`."""

  count: jax.Array
  mu: optax.Updates  # m_k: EMA of g - M_hat (signed)
  nu: optax.Updates  # v_k: EMA of g*g - V_hat (signed: it can be negative)


class DualOptimPlusState(NamedTuple):
  """State of `dualoptim_plus`.

  Attributes:
  count: the global step count T (every objective's updates).
  base_mu: the shared first moment M, an EMA of every gradient.
  base_nu: the shared second moment V, an EMA of every squared gradient.
  deltas: per objective label, its `DeltaState`.
  """

  count: jax.Array
  base_mu: optax.Updates
  base_nu: optax.Updates
  deltas: dict[str, DeltaState]


def dualoptim_plus(
  learning_rate: ScalarOrSchedule,
  forget_lr_ratio: float = 1.0,
  b1: float = 0.9,
  b2: float = 0.95,
  base_b1: float = 0.9,
  base_b2: float = 0.95,
  eps: float = 1e-8,
  weight_decay: float = 0.01,
  *,
  mask: MaskOrFn = None,
  max_grad_norm: float | None = None,
  state_bits: int | None = None,
  block_size: int | None = None,
  min_8bit_size: int | None = None,
  bounded_update: bool = False,
) -> optax.GradientTransformationExtraArgs:
  r"""DualOptim+ (the reference's active rule): shared base moments plus per-objective deltas.

  At global step :math:`T` (1-indexed, every objective counts) with objective :math:`k`, its own
  count :math:`t_k` and :math:`\eta_k = r_k\,\eta(T-1)` (:math:`r_\text{forget}` =
  ``forget_lr_ratio``, :math:`r_\text{retain} = 1`), with :math:`\beta_{1,2}` the delta betas and
  :math:`\beta_{3,4}` the base betas:

  .. math::
    \theta &\leftarrow \theta (1 - \eta_k \lambda) \quad \text{(decoupled decay first)} \\
    \hat M &= M / (1 - \beta_3^{T-1}), \quad \hat V = V / (1 - \beta_4^{T-1})
      \quad (\hat M = \hat V = 0 \text{ at } T = 1) \\
    m_k &\leftarrow \beta_1 m_k + (1-\beta_1)(g - \hat M), \quad
    v_k \leftarrow \beta_2 v_k + (1-\beta_2)(g \odot g - \hat V) \\
    \theta &\leftarrow \theta - \eta_k \frac{m_k/(1-\beta_1^{t_k}) + \hat M}
      {\sqrt{|v_k/(1-\beta_2^{t_k}) + \hat V|} + \epsilon} \\
    M &\leftarrow \beta_3 M + (1-\beta_3) g, \quad V \leftarrow \beta_4 V + (1-\beta_4) g \odot g
      \quad \text{(base updated after the step, with every gradient)}

  At :math:`T = 1` this is an Adam step; with :math:`M = V = 0` it is DualOptim's decoupled AdamW.

  On CPU, XLA copies the donated base moments before updating them in place unless
  ``XLA_FLAGS=--xla_cpu_copy_insertion_use_region_analysis=true`` is set (2.5x faster fp32 update
  on a ResNet-18-sized tree; see ``benchmarks/README.md``).

  **Float32 ill-conditioning.** :math:`\hat v_k + \hat V` is a difference of two EMAs (the delta
  :math:`v_k` tracks :math:`g^2 - \hat V`) and can nearly cancel: float32 round-off then decides
  the denominator, and one element's step can be hundreds of times :math:`\eta_k`. This is the
  reference's behaviour and is kept by default. ``bounded_update=True`` opts into a safer
  denominator :math:`\sqrt{\max(|\hat v_k + \hat V|, (\hat m_k + \hat M)^2)} + \epsilon`, which caps
  every element's step at :math:`\eta_k` (Adam's nominal step size) and departs from the reference
  only where its step would exceed :math:`\eta_k` (including steady states where the base and
  delta estimates overshoot, by tens of percent).

  Args:
    learning_rate: retain learning rate, a float or a schedule of the 0-indexed global step.
    forget_lr_ratio: forget learning rate / retain learning rate.
    b1, b2: delta betas. base_b1, base_b2: base betas.
    eps: added to the square root.
    weight_decay: decoupled decay rate, applied to the leaves selected by ``mask``.
    mask: optax-style mask (tree of booleans or a function of the params) of the decaying leaves.
    max_grad_norm: global-norm clipping before the update, or None.
    state_bits: 32 (None) or 8 for blockwise-quantized moments (signed dynamic map for the deltas
      and M, unsigned for V) on leaves with at least ``min_8bit_size`` elements.
    block_size: elements per quantization block (None: 256).
    min_8bit_size: smaller leaves keep float32 moments (None: 4096).
    bounded_update: use the safer denominator above (not in the reference).

  ``state_bits``, ``block_size`` and ``min_8bit_size`` are structural (``STRUCTURAL_ARGS``): under
  ``optax.inject_hyperparams`` leave them None or declare them static.

  Returns:
    A transform with ``update(updates, state, params, *, objective)``.
  """
  state_bits = structural("state_bits", state_bits)
  block_size = structural("block_size", block_size)
  min_8bit_size = structural("min_8bit_size", min_8bit_size)
  schedule = as_schedule(learning_rate)
  ratios = {FORGET: forget_lr_ratio, RETAIN: 1.0}
  quant = {"block_size": block_size, "min_8bit_size": min_8bit_size}

  def put(tree, signed):
    if state_bits == 32:
      return tree
    return jax.tree.map(lambda x: store(x, signed, **quant), tree)

  def get(tree):
    return jax.tree.map(load, tree, is_leaf=is_quantized)

  def init_fn(params):
    def zeros():  # float32 moments, each with its param's sharding
      return optax.tree.zeros_like(params, jnp.float32)

    def delta():
      return DeltaState(jnp.zeros([], jnp.int32), put(zeros(), True), put(zeros(), True))

    return DualOptimPlusState(
      count=jnp.zeros([], jnp.int32),
      base_mu=put(zeros(), True),
      base_nu=put(zeros(), False),
      deltas={k: delta() for k in ratios},
    )

  def update_fn(updates, state, params=None, *, objective=None, **extra_args):
    del extra_args
    _check_objective(objective, ratios)
    if params is None:
      raise ValueError("dualoptim_plus needs the params to apply its weight decay.")
    check_same_structure(updates, params)
    delta = state.deltas[objective]
    prev_steps = state.count  # T - 1
    t_k = optax.safe_increment(delta.count)
    lr = ratios[objective] * schedule(prev_steps)
    base_scale_m = jnp.where(prev_steps > 0, 1 / (1 - base_b1**prev_steps), 1.0)
    base_scale_v = jnp.where(prev_steps > 0, 1 / (1 - base_b2**prev_steps), 1.0)
    scale_m, scale_v = 1 / (1 - b1**t_k), 1 / (1 - b2**t_k)

    def leaf(g, p, decays, M, V, m, v):
      g = g.astype(jnp.float32)
      M_hat, V_hat = M * base_scale_m, V * base_scale_v
      m = b1 * m + (1 - b1) * (g - M_hat)
      v = b2 * v + (1 - b2) * (g * g - V_hat)
      numerator = m * scale_m + M_hat
      second = jnp.abs(v * scale_v + V_hat)
      if bounded_update:
        second = jnp.maximum(second, numerator * numerator)
      direction = numerator / (jnp.sqrt(second) + eps)
      lr_p = jnp.asarray(lr, p.dtype)
      step = -lr_p * direction.astype(p.dtype)
      if decays:
        step = step - lr_p * weight_decay * p
      M = base_b1 * M + (1 - base_b1) * g
      V = base_b2 * V + (1 - base_b2) * g * g
      return step, M, V, m, v

    leaves = jax.tree.map(
      leaf,
      updates,
      params,
      _decay_mask(mask, params),
      get(state.base_mu),
      get(state.base_nu),
      get(delta.mu),
      get(delta.nu),
    )
    pick = lambda i: jax.tree.map(lambda _, out: out[i], updates, leaves)  # noqa: E731
    deltas = dict(state.deltas)
    deltas[objective] = DeltaState(t_k, put(pick(3), True), put(pick(4), True))
    new_state = DualOptimPlusState(
      count=optax.safe_increment(state.count),
      base_mu=put(pick(1), True),
      base_nu=put(pick(2), False),
      deltas=deltas,
    )
    return pick(0), new_state

  tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  if max_grad_norm is not None:
    tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), tx)
  return tx
