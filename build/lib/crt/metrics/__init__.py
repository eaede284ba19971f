"""Evaluation metrics on the balanced evaluation set."""

from crt.metrics.classification import classification_metrics, mmd_rbf

__all__ = ["classification_metrics", "mmd_rbf"]
