"""Mesh checks on 8 forced CPU devices; run by test_mesh.py in a process of its own (the device
count is fixed when JAX starts). Not collected by the main run: no test_ prefix.

Every step function runs once on one device and once on a mesh from the same start; the two must
agree up to float reduction order, and the mesh run's arrays must keep the plan's layout."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402
from tasks.classification import conftest as tiny  # noqa: E402
from tasks.classification.conftest import bare_net  # noqa: E402

import dualoptim_jax as dj  # noqa: E402
from dualoptim_jax.core import MeshPlan  # noqa: E402
from dualoptim_jax.data.tofu import bucket_batches  # noqa: E402
from dualoptim_jax.models.decoder import Decoder, DecoderConfig  # noqa: E402
from dualoptim_jax.optim import FORGET, RETAIN  # noqa: E402
from dualoptim_jax.optim.quantized_state import is_quantized  # noqa: E402
from dualoptim_jax.tasks.classification import METHODS, UnlearnConfig, unlearn  # noqa: E402
from dualoptim_jax.tasks.classification.pretrain import train_classifier  # noqa: E402
from dualoptim_jax.tasks.llm import unlearn as llm  # noqa: E402
from dualoptim_jax.tasks.llm.losses import lm_loss  # noqa: E402

MESHES = {"data8": (8, 1), "data4-fsdp2": (4, 2)}


def plan_of(mesh, zero1=False):
  return MeshPlan.create(*MESHES[mesh], zero1=zero1, min_size=1)


def assert_laid_out(plan, state, tx):
  """Every array of ``state`` has the sharding the plan gives it."""
  expected = jax.tree.leaves(plan.state_shardings(state, tx))
  for x, sharding in zip(jax.tree.leaves(state), expected, strict=True):
    assert x.sharding.is_equivalent_to(sharding, x.ndim), (x.shape, x.sharding, sharding)


def assert_close(a, b, rtol=2e-4, atol=2e-5):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def problem():
  pool, split = tiny.make_data()
  graphdef, original = train_classifier(
    bare_net(), pool, epochs=10, batch_size=40, lr=0.05, progress=False
  )
  return graphdef, original, split


def test_the_fsdp_rule():
  plan = MeshPlan.create(4, 2, min_size=16)
  assert plan.sharding((64, 512)).spec == P(None, "fsdp")  # the largest axis that 2 divides
  assert plan.sharding((64, 5)).spec == P("fsdp", None)
  assert plan.sharding((3, 5)).spec == P()  # no axis divides
  assert plan.sharding((4, 2)).spec == P()  # under min_size
  assert plan.sharding((64, 512), ("data", "fsdp")).spec == P(None, ("data", "fsdp"))
  assert plan.sharding((12, 6), ("data", "fsdp")).spec == P()  # 8 divides neither axis
  assert MeshPlan.create(8, 1, min_size=1).sharding((64, 512)).spec == P()  # fsdp=1: replicated


def test_bad_meshes_and_batches_are_refused():
  with pytest.raises(ValueError, match="needs 6 devices"):
    MeshPlan.create(3, 2)
  with pytest.raises(ValueError, match="fsdp=3 does not divide"):
    MeshPlan.create(fsdp=3)
  assert MeshPlan.create().mesh.shape == {"data": 8, "fsdp": 1}
  with pytest.raises(ValueError, match="12 rows does not split over the mesh's 8 devices"):
    MeshPlan.create().put_batch({"x": np.zeros((12, 3))})


@pytest.mark.parametrize("zero1", [False, True])
def test_init_from_abstract_shapes_equals_init_on_one_device(zero1):
  plan = MeshPlan.create(4, 2, zero1=zero1, min_size=1)
  tx = dj.dualoptim_plus(1e-3, state_bits=8)
  config = DecoderConfig(vocab_size=64, dim=32, layers=1, heads=2, max_len=16)
  model_fn = lambda: Decoder(config, rngs=nnx.Rngs(3))  # noqa: E731
  graphdef, state = plan.init(model_fn, tx, seed=5)
  expected_graphdef, expected = dj.core.init_state(model_fn(), tx, seed=5)
  assert graphdef == expected_graphdef
  assert_close(state, expected, rtol=1e-6, atol=1e-7)  # compiled vs eager initialisers
  assert_laid_out(plan, state, tx)
  kernel = state.params["blocks"][0]["up"]["kernel"]  # (32, 128): fsdp on its 128 axis
  assert kernel.sharding.spec == P(None, "fsdp")
  moments = [x for x in jax.tree.leaves(state.opt_state, is_leaf=is_quantized) if is_quantized(x)]
  up = [x.codes for x in moments if x.codes.shape == (32, 128)]
  assert up  # its 8-bit moments
  for codes in up:
    assert codes.sharding.spec == (P(None, ("data", "fsdp")) if zero1 else P(None, "fsdp"))


def test_pretraining_on_a_mesh_equals_one_device(problem):
  pool, _ = tiny.make_data()
  model = bare_net()
  args = dict(epochs=2, batch_size=40, lr=0.05, progress=False)
  _, single = train_classifier(model, pool, **args)
  plan = plan_of("data4-fsdp2")
  _, sharded = train_classifier(model, pool, plan=plan, **args)
  assert_close(single.params, sharded.params)
  assert_close(single.model_state, sharded.model_state)  # global-batch BatchNorm statistics


@pytest.mark.parametrize("mesh", list(MESHES))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_on_a_mesh_equals_one_device(problem, method, mesh):
  graphdef, original, split = problem
  config = UnlearnConfig(epochs=2, batch_size=40, forget_lr=1e-3, retain_lr=0.01)
  # SCRUB's first forget step starts at the teacher, where the KL gradient is exactly zero: its
  # float noise differs with the reduction order, and DualOptim's Adam scales any noise up to a
  # full step, so SCRUB's runs compare with SGD.
  optimizer = "sgd" if method == "SCRUB" else "dual"
  method = METHODS[method]
  single = unlearn(method, optimizer, graphdef, original, split, config, seed=1)
  plan = plan_of(mesh, zero1=mesh == "data8")
  sharded = unlearn(method, optimizer, graphdef, original, split, config, seed=1, plan=plan)
  assert_close(single.params, sharded.params)
  assert_close(single.model_state, sharded.model_state)
  assert_close(single.opt_state, sharded.opt_state)
  tx = method.optimizer(optimizer, config, method.schedule(split, config))
  assert_laid_out(plan, sharded, tx)


def _token_stream(rng, n, vocab=64, length=12):
  examples = []
  for _ in range(n):
    ids = rng.integers(2, vocab, length).astype(np.int32)
    labels = ids.copy()
    labels[:4] = -100  # the prompt
    examples.append((ids, labels))
  return examples


DECODER = DecoderConfig(vocab_size=64, dim=32, layers=2, heads=2, max_len=16)


# KL's retain loss starts at its reference (a zero gradient, as SCRUB's) and DualOptim+ is
# ill-conditioned in float32 by design (`dualoptim_plus`): their runs follow the float noise of the
# reduction order. DualOptim+ is compared step by step below, with its bounded update.
def test_an_llm_run_on_a_mesh_equals_one_device():
  method, optimizer = "IDK+AP", "dual"  # paired IDK batches, two states
  rng = np.random.default_rng(0)
  forget = llm.Stream(_token_stream(rng, 16), _token_stream(rng, 16))
  retain = llm.Stream(_token_stream(rng, 48), _token_stream(rng, 48))
  config = llm.UnlearnConfig(lr=1e-3, batch_size=8, epochs=1, buckets=(16,))
  args = (Decoder(DECODER, rngs=nnx.Rngs(0)), forget, retain, config, method, optimizer)
  _, single = llm.unlearn_lm(*args, forget_lr_ratio=3.0, pad_id=1, progress=False)
  plan = plan_of("data4-fsdp2")
  _, sharded = llm.unlearn_lm(*args, forget_lr_ratio=3.0, pad_id=1, progress=False, plan=plan)
  assert_close(single.params, sharded.params)
  per_epoch = llm.steps_per_epoch(config, 16, optimizer)
  assert_laid_out(plan, sharded, llm.unlearn_tx(config, optimizer, 3.0, per_epoch, per_epoch))


@pytest.mark.parametrize(("mesh", "state_bits"), [("data8", 8), ("data4-fsdp2", 32)])
def test_dualoptim_plus_llm_steps_on_a_mesh_equal_one_device(mesh, state_bits):
  tx = dj.dualoptim_plus(
    1e-3, 3.0, max_grad_norm=1.0, state_bits=state_bits, min_8bit_size=256, bounded_update=True
  )
  model = Decoder(DECODER, rngs=nnx.Rngs(0))
  graphdef = nnx.graphdef(model)
  rng = np.random.default_rng(1)
  batches = [next(bucket_batches(_token_stream(rng, 8), 8, (16,), 1)) for _ in range(4)]
  plan = plan_of(mesh, zero1=mesh == "data8")
  results = []
  for step_plan in (None, plan):
    _, state = dj.core.init_state(Decoder(DECODER, rngs=nnx.Rngs(0)), tx, seed=0)
    if step_plan is not None:
      state = step_plan.put_state(state, tx)
    step = dj.core.make_step(tx, lm_loss(graphdef), step_plan)
    for t, batch in enumerate(batches):
      state, _ = step(state, batch, objective=FORGET if t in (0, 3) else RETAIN)
    results.append(state)
  single, sharded = results
  # Even bounded, the denominator sqrt(max(|v_k + V|, (m_k + M)^2)) may near-cancel in an element
  # (and an 8-bit code flip): allow a few percent of one step (lr x ratio = 3e-3).
  assert_close(single.params, sharded.params, rtol=1e-3, atol=1e-4)
  assert_laid_out(plan, sharded, tx)
