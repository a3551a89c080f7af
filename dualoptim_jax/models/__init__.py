"""Image classifiers.

``make_model(name, **kwargs)`` builds a model from the ``MODELS`` registry.
"""

from dualoptim_jax.models.resnet import BasicBlock, ResNet18, apply

MODELS = {"resnet18": ResNet18}


def make_model(name: str, **kwargs):
  """Builds ``MODELS[name](**kwargs)``."""
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; available: {sorted(MODELS)}.")
  return MODELS[name](**kwargs)


__all__ = ["BasicBlock", "MODELS", "ResNet18", "apply", "make_model"]
