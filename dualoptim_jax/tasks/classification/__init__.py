"""Image-classification unlearning: losses, gradient masks, the UA/RA/TA/MIA metrics, the methods
(FT, GA, RL, SalUn, SCRUB, SFRon), pretraining, and the table runner."""

from dualoptim_jax.tasks.classification.masks import fisher_mask, salun_mask
from dualoptim_jax.tasks.classification.methods import (
  FT,
  GA,
  METHODS,
  OPTIMIZERS,
  RL,
  SCRUB,
  Method,
  SalUn,
  SFRon,
  UnlearnConfig,
  unlearn,
  unlearn_stacked,
)
from dualoptim_jax.tasks.classification.metrics import METRICS, evaluate, predict
from dualoptim_jax.tasks.classification.pretrain import train_classifier
from dualoptim_jax.tasks.classification.run import ExperimentConfig, run_table, write_table

__all__ = [
  "FT",
  "GA",
  "METHODS",
  "METRICS",
  "OPTIMIZERS",
  "RL",
  "SCRUB",
  "ExperimentConfig",
  "Method",
  "SFRon",
  "SalUn",
  "UnlearnConfig",
  "evaluate",
  "fisher_mask",
  "predict",
  "run_table",
  "salun_mask",
  "train_classifier",
  "unlearn",
  "unlearn_stacked",
  "write_table",
]
