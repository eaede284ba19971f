"""Losses: the demixing objectives (GCL, FDV) and the classification losses every stage can use.

Every classification loss registers itself in `crt.registry.LOSSES` where it is defined; importing this
package imports all of them, so each name is known as soon as `crt.losses` is imported.
"""

from crt.losses import adjusted, imbalance, multilabel  # noqa: F401  (register every loss)
from crt.losses.classification import LOSSES, ClassLoss, build_loss
from crt.losses.contrastive import fdv_loss, gcl_loss

__all__ = ["LOSSES", "ClassLoss", "build_loss", "fdv_loss", "gcl_loss"]
