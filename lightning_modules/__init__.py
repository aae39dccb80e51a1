"""LightningModules that train the resattn networks."""

from lightning_modules.classifier import ImageClassifier, NonFiniteLossError

__all__ = ["ImageClassifier", "NonFiniteLossError"]
