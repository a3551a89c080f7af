"""Flax NNX models: the CIFAR ResNet-18 and a decoder-only LM."""

from dualoptim_jax.models.decoder import Decoder, DecoderConfig, greedy_generate
from dualoptim_jax.models.resnet import BasicBlock, ResNet18, apply

__all__ = ["BasicBlock", "Decoder", "DecoderConfig", "ResNet18", "apply", "greedy_generate"]
