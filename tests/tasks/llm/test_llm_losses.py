"""The causal-LM loss on hand-computed cases."""

import math

import jax.numpy as jnp
import numpy as np

from dualoptim_jax.data.tofu import IGNORE
from dualoptim_jax.tasks.llm.losses import mean_token_nll, token_nll


def test_position_t_predicts_label_t_plus_one_and_ignored_labels_do_not_count():
  # Position 0 predicts label 1 with p = 2 / 4; position 1 predicts label 2 with p = 1 / 3;
  # position 2 has no next label, and the second row's labels are all ignored but one.
  logits = jnp.asarray(
    [
      [[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
      [[0.0, 0.0, 0.0], [0.0, 0.0, math.log(3.0)], [1.0, 2.0, 3.0]],
    ]
  )
  labels = jnp.asarray([[IGNORE, 1, 2], [IGNORE, IGNORE, 2]])
  nll, counted = token_nll(logits, labels)
  np.testing.assert_array_equal(counted, [[True, True], [False, True]])
  np.testing.assert_allclose(nll, [[math.log(2), math.log(3)], [0.0, -math.log(3 / 5)]], rtol=1e-6)
  expected = (math.log(2) + math.log(3) - math.log(3 / 5)) / 3
  np.testing.assert_allclose(mean_token_nll(logits, labels), expected, rtol=1e-6)
