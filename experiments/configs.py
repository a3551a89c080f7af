"""Named experiment configurations: a CPU-scale default, the project's CPU benchmark
``fashion_mnist_small``, and the paper-scale CIFAR-10 and TinyImageNet settings.

A config fixes the data, the model, the pretraining recipe (shared by the original model and
the retrained reference), the unlearning recipe and the learning rate of every
(method, optimizer) pair.
"""

import dataclasses

from dualoptim_jax.unlearn import UnlearnConfig

# Forget learning rates. The shared SGD baseline uses the reference README's SalUn value. For AdamW
# (adam, dual), 3e-4 had the lowest Avg. Gap of RL + DualOptim among {1e-4, 3e-4, 1e-3} on the
# `default` config, seed 1 (`--forget-lr dual=...`); the paper grid-searches it per method.
# SFRon's shared optimizers run at the retain lr (reference).
SGD_FORGET_LR = 0.018
ADAM_FORGET_LR = 3e-4


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """One experiment: data, model, pretraining, unlearning and the grid to run."""

  name: str
  dataset: str  # "fashion_mnist_small", "fashion_mnist_tiny" (100 per class, 1,000 test images),
  #               "cifar10", "cifar100", "svhn", "tiny_imagenet"
  width: int = 16
  pretrain_epochs: int = 30
  pretrain_lr: float = 0.1
  pretrain_batch_size: int = 128
  pretrain_augment: bool = False
  unlearn: UnlearnConfig = UnlearnConfig()
  forget_lr: dict = dataclasses.field(default_factory=lambda: {
      "sgd": SGD_FORGET_LR, "adam": ADAM_FORGET_LR, "dual": ADAM_FORGET_LR})
  methods: tuple[str, ...] = ("RL", "SalUn", "SCRUB", "SFRon")
  optimizers: tuple[str, ...] = ("sgd", "dual")
  seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
  track_epochs: tuple[str, ...] = ("SFRon",)  # methods whose metrics are logged every epoch
  split_seed_offset: int = 0  # CIFAR convention: the forget set of seed s uses RandomState(s - 1)

  def unlearn_config(self, method: str, optimizer: str) -> UnlearnConfig:
    return dataclasses.replace(self.unlearn, forget_lr=self.forget_lr[optimizer])


CONFIGS = {
    # The README's main job: finishes in minutes on 2 CPU cores (sizes chosen by measuring).
    "default": ExperimentConfig(
        name="default", dataset="fashion_mnist_tiny", width=8, pretrain_epochs=10,
        unlearn=UnlearnConfig(epochs=5, batch_size=128),
        methods=("RL", "SFRon"), optimizers=("sgd", "dual"), seeds=(1,),
    ),
    # The project's CPU benchmark (see the data package's fashion_mnist_small).
    # Forget lrs: the lowest Avg. Gap of RL on seed 1 among sgd {0.002, 0.006, 0.018} and
    # dual {1e-4, 3e-4, 1e-3} (results/fashion_mnist_small/lr_grid), used for every method.
    "fashion_mnist_small": ExperimentConfig(
        name="fashion_mnist_small", dataset="fashion_mnist_small", width=16,
        pretrain_epochs=30, unlearn=UnlearnConfig(epochs=10, batch_size=128),
        forget_lr={"sgd": 0.002, "adam": 1e-4, "dual": 1e-4},
    ),
    # Paper scale (GPU/TPU): CIFAR-10, ResNet-18, 10% random forgetting, 182-epoch pretraining.
    "cifar10": ExperimentConfig(
        name="cifar10", dataset="cifar10", width=64, pretrain_epochs=182,
        pretrain_batch_size=256, pretrain_augment=True,
        unlearn=UnlearnConfig(epochs=10, batch_size=256, augment=True, sfron_iters=1500),
        split_seed_offset=-1,
    ),
    # Paper scale: TinyImageNet (the paper uses Swin-T; ResNet-18 at 64x64 stands in here).
    "tiny_imagenet": ExperimentConfig(
        name="tiny_imagenet", dataset="tiny_imagenet", width=64, pretrain_epochs=182,
        pretrain_batch_size=256, pretrain_augment=True,
        unlearn=UnlearnConfig(epochs=10, batch_size=256, augment=True, sfron_iters=1500,
                              sfron_lambda=0.6),
        split_seed_offset=-1,
    ),
}
