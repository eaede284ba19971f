"""Networks: encoders and predictors, the demixing flow, the per-dimension critic and class priors."""

from crt.models.critic import BatchedCritic
from crt.models.flow import build_maf, calibrate_batchnorm
from crt.models.mlp import MLP, build_encoder
from crt.models.prior import ClassPrior

__all__ = ["MLP", "build_encoder", "build_maf", "calibrate_batchnorm", "BatchedCritic", "ClassPrior"]
