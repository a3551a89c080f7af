"""Named experiment configurations: a CPU-scale default, the project's CPU benchmark
``fashion_mnist_small``, the paper-scale CIFAR-10 and TinyImageNet settings, and the TOFU
target/retain models ``tofu_mini`` (minutes on a CPU) and ``tofu_cpu`` (all 4,000 QA).

A config fixes the setting (``data/settings.py``), the model, the pretraining recipe (shared by
the original model and the retrained reference), the unlearning recipe, the methods with their
hyper-parameters and the forget learning rate of every optimizer.
"""

import dataclasses

from dualoptim_jax.tasks.classification import (
  RL,
  SCRUB,
  ExperimentConfig,
  SalUn,
  SFRon,
  UnlearnConfig,
)
from dualoptim_jax.tasks.llm import unlearn as llm
from dualoptim_jax.tasks.llm.evaluate import EvalConfig
from dualoptim_jax.tasks.llm.finetune import FinetuneConfig
from dualoptim_jax.tasks.llm.run import EVAL_SETS, TofuConfig

# Forget learning rates. The shared SGD baseline uses the reference README's SalUn value. For AdamW
# (adam, dual), 3e-4 had the lowest Avg. Gap of RL + DualOptim among {1e-4, 3e-4, 1e-3} on the
# `default` config, seed 1 (`--forget-lr dual=...`); the paper grid-searches it per method.
# SFRon's shared optimizers run at the retain lr (reference).
FORGET_LR = {"sgd": 0.018, "adam": 3e-4, "dual": 3e-4}

CONFIGS = {
  # The README's main job: finishes in minutes on 2 CPU cores (sizes chosen by measuring).
  "default": ExperimentConfig(
    name="default",
    setting="fashion_mnist_tiny",
    width=8,
    pretrain_epochs=10,
    unlearn=UnlearnConfig(epochs=5, batch_size=128),
    forget_lr=FORGET_LR,
    methods=(RL(), SFRon()),
    seeds=(1,),
  ),
  # The project's CPU benchmark. Forget lrs: the lowest Avg. Gap of RL on seed 1 among sgd
  # {0.002, 0.006, 0.018} and dual {1e-4, 3e-4, 1e-3} (results/fashion_mnist_small/lr_grid),
  # used for every method.
  "fashion_mnist_small": ExperimentConfig(
    name="fashion_mnist_small",
    setting="fashion_mnist_small",
    width=16,
    pretrain_epochs=30,
    unlearn=UnlearnConfig(epochs=10, batch_size=128),
    forget_lr={"sgd": 0.002, "adam": 1e-4, "dual": 1e-4},
  ),
}
# The fidelity check against the reference code: `fashion_mnist_small` with the original model
# pretrained on the reference's own rate (20-epoch-period cosine, ending near its peak), RL only.
CONFIGS["fashion_mnist_small_refschedule"] = dataclasses.replace(
  CONFIGS["fashion_mnist_small"],
  name="fashion_mnist_small_refschedule",
  original_schedule="reference",
  methods=(RL(),),
)
# Paper scale (GPU/TPU): CIFAR-10, ResNet-18, 10% random forgetting, 182-epoch pretraining.
CONFIGS["cifar10"] = ExperimentConfig(
  name="cifar10",
  setting="cifar10",
  width=64,
  pretrain_epochs=182,
  pretrain_batch_size=256,
  pretrain_augment=True,
  unlearn=UnlearnConfig(epochs=10, batch_size=256, augment=True),
  forget_lr=FORGET_LR,
  methods=(RL(), SalUn(), SCRUB(), SFRon(iters=1500)),  # the reference's 1,500 iterations
)
# Paper scale: TinyImageNet as CIFAR-10 (the paper uses Swin-T; ResNet-18 at 64x64 stands in here).
CONFIGS["tiny_imagenet"] = dataclasses.replace(
  CONFIGS["cifar10"],
  name="tiny_imagenet",
  setting="tiny_imagenet",
  methods=(RL(), SalUn(), SCRUB(), SFRon(iters=1500, lambd=0.6)),
)
# TOFU at CPU scale (sizes measured, see the README): a 1.3M-parameter decoder on 40 authors, and
# a 4.2M-parameter one on all 200. Unlearning follows the reference's schedule (5 epochs of 1
# forget : 5 retain steps, warm-up one epoch then linear decay, clipping 1.0, wd 0.01, DualOptim+
# betas for every optimizer) at the reference's batch of 40 (tofu_mini: 16, for its 80 forget QA:
# 150 steps), with the retain lr at 1/10 of the fine-tuning peak and the forget lr gridded.
CONFIGS["tofu_mini"] = TofuConfig(
  name="tofu_mini",
  setting="tofu_mini",
  dim=128,
  finetune=FinetuneConfig(epochs=20, max_epochs=30),
  unlearn=llm.UnlearnConfig(lr=2e-4, batch_size=16),
  curve_size=40,
)
CONFIGS["tofu_cpu"] = TofuConfig(
  name="tofu_cpu",
  setting="tofu",
  dim=256,
  finetune=FinetuneConfig(epochs=20, max_epochs=30),
  unlearn=llm.UnlearnConfig(lr=2e-4),
  # At equal rates the separate states forget far less than a shared one (tofu_mini, ME+GD: forget
  # ROUGE-L 0.98 against 0.12), so their grids reach higher.
  forget_lr_ratios={
    "shared": (0.3, 1.0, 3.0),
    "joint": (0.3, 1.0, 3.0),
    **dict.fromkeys(("dual", "plus"), (1.0, 3.0, 10.0)),
    "plus8": "plus",  # 8-bit DualOptim+ runs at 32-bit DualOptim+'s chosen ratio
  },
  tasks=(1, 2, 3),
)
# Full scale (GPU/TPU): TOFU's fine-tuned checkpoints and a retain model from user folders
# (--model-path, --retain-model-path), bfloat16 compute, the reference's eval budget (ds_size 300,
# generation up to 256 tokens for Phi and 200 for Llama), all four evaluation sets.
_FULL_EVAL = EvalConfig(
  batch_size=32,
  buckets=(128, 256, 384, 512),
  prompt_buckets=(64, 128, 256),
  max_new_tokens=256,
)
# Unlearning: the reference's hyper-parameters (lr = forget lr = 1e-5, 300 steps at batch 40 on
# forget10, 1:5, DualOptim+ betas (0.9, 0.95, 0.9, 0.95)), in micro-batches of 5; one task (the
# given retain model is task 1's).
_FULL_UNLEARN = llm.UnlearnConfig(lr=1e-5, micro_batches=8, buckets=(128, 256, 384, 512))
CONFIGS |= {
  "tofu_ft_phi-1.5": TofuConfig(
    name="tofu_ft_phi-1.5",
    template="qa",  # TOFU fine-tuned Phi-1.5 on "Question: ...\nAnswer: "
    max_len=2048,
    eval=_FULL_EVAL,
    eval_sets=EVAL_SETS,
    pretrained=True,
    dtype="bfloat16",
    unlearn=_FULL_UNLEARN,
    forget_lr_ratios=(1.0, 1.5),
  ),
  "tofu_ft_llama2-7b": TofuConfig(
    name="tofu_ft_llama2-7b",
    template="llama2",
    max_len=4096,
    eval=dataclasses.replace(_FULL_EVAL, max_new_tokens=200),
    eval_sets=EVAL_SETS,
    pretrained=True,
    dtype="bfloat16",
    unlearn=_FULL_UNLEARN,
    forget_lr_ratios=(1.0, 1.5),
  ),
}
