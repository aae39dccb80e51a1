"""LightningModules that train the resattn networks."""

from lightning_modules.classifier import ImageClassifier, NonFiniteLossError, build_network

__all__ = ["ImageClassifier", "NonFiniteLossError", "build_network"]
