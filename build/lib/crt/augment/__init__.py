"""Minority augmentation: in source space (CRT/ECRT) or feature space (SMOTE, GAN baselines).

Every augmenter registers itself in `crt.registry.AUGMENTERS` where it is defined; importing this package
imports all of them.
"""

from crt.augment import feature, source  # noqa: F401  (register every augmenter)
from crt.augment.source import AUGMENTERS, augment, register_augmenter

__all__ = ["AUGMENTERS", "augment", "register_augmenter"]
