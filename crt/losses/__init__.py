"""Losses: the demixing objectives (GCL, FDV) and the classification losses every stage can use."""

from crt.losses.classification import LOSSES, ClassLoss, build_loss
from crt.losses.contrastive import fdv_loss, gcl_loss

__all__ = ["LOSSES", "ClassLoss", "build_loss", "fdv_loss", "gcl_loss"]
