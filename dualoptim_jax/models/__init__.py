"""Flax NNX models."""

from dualoptim_jax.models.resnet import BasicBlock, ResNet18, apply

__all__ = ["BasicBlock", "ResNet18", "apply"]
