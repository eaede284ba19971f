"""Minority augmentation: in source space (CRT/ECRT) or feature space (SMOTE, GAN baselines)."""

from crt.augment.source import AUGMENTERS, augment, register_augmenter

__all__ = ["AUGMENTERS", "augment", "register_augmenter"]
