r"""Causal-LM losses over batches ``{"input_ids", "labels"}`` whose labels are ``IGNORE`` where
no loss counts (the question, the padding), and the unlearning losses of the reference.

With :math:`S_\theta(x)` the summed next-token NLL of sequence :math:`x`'s answer tokens,
:math:`\bar L_\theta` the mean NLL over a batch's answer tokens and :math:`\beta` = ``beta``:

Forget losses (on the forget stream :math:`f`; :math:`i` is the same question with an IDK answer):

- GA: :math:`-\bar L_\theta(f)`;
- NPO: :math:`-\frac{2}{\beta}\,\mathrm{mean}\log\sigma(\beta(S_\theta(f) - S_\mathrm{ref}(f)))`;
- DPO: :math:`-\frac{2}{\beta}\,\mathrm{mean}\log\sigma(\beta[(S_\theta(f) - S_\theta(i))
  - (S_\mathrm{ref}(f) - S_\mathrm{ref}(i))])`;
- ME: the mean over answer positions of :math:`\mathrm{KL}(U \| p_\theta) =
  \sum_v \frac1V (\log\frac1V - \log(p_v + 10^{-12}))`;
- IDK: :math:`\bar L_\theta(i)`.

Retain losses (on the retain stream :math:`r`):

- GD: :math:`\bar L_\theta(r)`;
- KL: :math:`\frac{1}{BT}\sum_{b,t}\mathrm{KL}(p_\mathrm{ref} \| p_\theta)` over ALL positions
  (question and padding included, as the reference);
- AP: :math:`-\frac{1}{\beta}\,\mathrm{mean}\log\sigma(\beta(S_\theta(i) - S_\theta(r)))`.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dualoptim_jax.data.tofu import IGNORE

FORGET_LOSSES = ("GA", "NPO", "DPO", "ME", "IDK")
RETAIN_LOSSES = ("GD", "KL", "AP")


def token_nll(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-position NLL of the next token and the mask of counted positions, ``(batch, time - 1)``.

  Position ``t`` predicts ``labels[t + 1]`` (the shift of Hugging Face's causal-LM loss).
  """
  targets = labels[:, 1:]
  counted = targets != IGNORE
  nll = optax.softmax_cross_entropy_with_integer_labels(
    logits[:, :-1].astype(jnp.float32), jnp.where(counted, targets, 0)
  )
  return jnp.where(counted, nll, 0.0), counted


def mean_token_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The mean NLL over every counted token of the batch (Hugging Face's causal-LM loss)."""
  nll, counted = token_nll(logits, labels)
  return nll.sum() / jnp.maximum(counted.sum(), 1)


def sequence_nll(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """:math:`S(x)`: per sequence, the summed NLL of its counted tokens, ``(batch,)``."""
  return token_nll(logits, labels)[0].sum(axis=1)


def npo_loss(nll: jax.Array, ref_nll: jax.Array, beta: float) -> jax.Array:
  """NPO from the sequences' summed NLLs under the model and the frozen reference."""
  return -2 / beta * jnp.mean(jax.nn.log_sigmoid(beta * (nll - ref_nll)))


def dpo_loss(nll, idk_nll, ref_nll, ref_idk_nll, beta: float) -> jax.Array:
  """DPO preferring the IDK answer (``idk_*``) over the true one (summed NLLs)."""
  margin = (nll - idk_nll) - (ref_nll - ref_idk_nll)
  return -2 / beta * jnp.mean(jax.nn.log_sigmoid(beta * margin))


def preference_loss(nll: jax.Array, idk_nll: jax.Array, beta: float) -> jax.Array:
  """AP: prefer the true answer (``nll``) over the IDK one, without a reference."""
  return -1 / beta * jnp.mean(jax.nn.log_sigmoid(beta * (idk_nll - nll)))


def uniform_kl(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """ME: the mean over counted (shifted) positions of :math:`\\mathrm{KL}(U \\| p)`."""
  counted = labels[:, 1:] != IGNORE
  probs = jax.nn.softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  vocab = logits.shape[-1]
  kl = jnp.mean(-jnp.log(vocab) - jnp.log(probs + 1e-12), axis=-1)
  return jnp.sum(jnp.where(counted, kl, 0.0)) / jnp.maximum(counted.sum(), 1)


def reference_kl(logits: jax.Array, ref_logits: jax.Array) -> jax.Array:
  """:math:`\\mathrm{KL}(p_\\mathrm{ref} \\| p)` summed over the vocabulary, averaged over every
  position of the batch (PyTorch's ``kl_div(..., log_target=True, reduction="batchmean")`` on the
  flattened logits)."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_ref = jax.nn.log_softmax(ref_logits.astype(jnp.float32), axis=-1)
  kl = jnp.sum(jnp.exp(log_ref) * (log_ref - log_p), axis=-1)
  return kl.mean()


def lm_loss(graphdef: nnx.GraphDef):
  """The core ``loss_fn`` of next-token prediction (`mean_token_nll`) for a decoder LM."""

  def loss_fn(params, model_state, batch, rng, extras):
    del rng, extras
    logits, _ = nnx.merge(graphdef, params, model_state)(batch["input_ids"])
    return mean_token_nll(logits, batch["labels"]), (model_state, {})

  return loss_fn


def _forward(graphdef, params, model_state, input_ids):
  return nnx.merge(graphdef, params, model_state)(input_ids)[0]


def forget_loss(kind: str, graphdef: nnx.GraphDef, beta: float = 0.1):
  """``loss(params, model_state, batch, reference_params) -> scalar`` of a forget loss.

  The batch holds ``input_ids``/``labels`` (the forget QA), ``idk_input_ids``/``idk_labels`` (the
  same questions with an IDK answer) and, for NPO and DPO, ``ref_nll``/``ref_idk_nll`` (the frozen
  reference's summed NLLs of both, computed once before the run).
  """
  if kind not in FORGET_LOSSES:
    raise ValueError(f"Unknown forget loss {kind!r}; known: {', '.join(FORGET_LOSSES)}.")

  def loss(params, model_state, batch, reference_params):
    del reference_params
    forward = lambda ids: _forward(graphdef, params, model_state, ids)  # noqa: E731
    if kind == "IDK":
      return mean_token_nll(forward(batch["idk_input_ids"]), batch["idk_labels"])
    logits = forward(batch["input_ids"])
    if kind == "GA":
      return -mean_token_nll(logits, batch["labels"])
    if kind == "ME":
      return uniform_kl(logits, batch["labels"])
    nll = sequence_nll(logits, batch["labels"])
    if kind == "NPO":
      return npo_loss(nll, batch["ref_nll"], beta)
    idk_nll = sequence_nll(forward(batch["idk_input_ids"]), batch["idk_labels"])
    return dpo_loss(nll, idk_nll, batch["ref_nll"], batch["ref_idk_nll"], beta)

  return loss


def retain_loss(kind: str, graphdef: nnx.GraphDef, beta: float = 0.1):
  """``loss(params, model_state, batch, reference_params) -> scalar`` of a retain loss; KL runs
  the frozen reference (``reference_params``) on the batch."""
  if kind not in RETAIN_LOSSES:
    raise ValueError(f"Unknown retain loss {kind!r}; known: {', '.join(RETAIN_LOSSES)}.")

  def loss(params, model_state, batch, reference_params):
    logits = _forward(graphdef, params, model_state, batch["input_ids"])
    if kind == "GD":
      return mean_token_nll(logits, batch["labels"])
    if kind == "KL":
      ref = _forward(
        graphdef, jax.lax.stop_gradient(reference_params), model_state, batch["input_ids"]
      )
      return reference_kl(logits, ref)
    nll = sequence_nll(logits, batch["labels"])
    idk_nll = sequence_nll(
      _forward(graphdef, params, model_state, batch["idk_input_ids"]), batch["idk_labels"]
    )
    return preference_loss(nll, idk_nll, beta)

  return loss
