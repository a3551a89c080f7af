"""One process of the two-process test (test_multiprocess.py), or the one-process run it is
compared with: pretraining with an Orbax checkpoint, then an RL + DualOptim run, on the mesh of
every device of every process.

  python multiprocess_worker.py OUT PROCESS_ID NUM_PROCESSES PORT   # NUM_PROCESSES 1: no mesh

Writes ``OUT/params_<PROCESS_ID>.npz`` (the global unlearned params, as this process sees them)
and, through the project's writers, ``OUT/run.json`` (process 0 alone).
"""

import pathlib
import sys

out, process_id, num_processes, port = sys.argv[1], *map(int, sys.argv[2:])
sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))  # the tests folder

from dualoptim_jax.core import distributed  # noqa: E402

if num_processes > 1:
  distributed.initialize(f"localhost:{port}", num_processes, process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from tasks.classification import conftest as tiny  # noqa: E402

from dualoptim_jax import eval as E  # noqa: E402
from dualoptim_jax.core import MeshPlan  # noqa: E402
from dualoptim_jax.tasks.classification import RL, UnlearnConfig, unlearn  # noqa: E402
from dualoptim_jax.tasks.classification.pretrain import train_classifier  # noqa: E402

out = pathlib.Path(out)
plan = MeshPlan.create(min_size=1) if num_processes > 1 else None
pool, split = tiny.make_data()


def pretrain():
  return train_classifier(
    tiny.bare_net(),
    pool,
    epochs=3,
    batch_size=40,
    lr=0.05,
    progress=False,
    checkpoint_dir=out / "original",
    plan=plan,
  )


def gather(tree):
  """The global values of ``tree`` in this process."""
  return multihost_utils.process_allgather(tree, tiled=True) if plan else tree


graphdef, original = pretrain()
_, restored = pretrain()  # every epoch is checkpointed: this reads the last one back
for a, b in zip(jax.tree.leaves(gather(original)), jax.tree.leaves(gather(restored)), strict=True):
  assert np.array_equal(a, b)
config = UnlearnConfig(epochs=2, batch_size=40, forget_lr=1e-3)
state = unlearn(RL(), "dual", graphdef, original, split, config, seed=1, plan=plan)
leaves = {
  jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree.leaves_with_path(gather(state.params))
}
np.savez(out / f"params_{process_id}.npz", **leaves)
E.save_run_json(out / "run.json", {"process": jax.process_index(), "devices": jax.device_count()})
