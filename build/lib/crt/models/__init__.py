"""Networks: encoders and predictors, the demixing flow, the per-dimension critic and class priors.

Encoders register themselves in `crt.registry.ENCODERS` where they are defined (mlp.py, resnet.py);
importing this package imports all of them.
"""

from crt.models import resnet  # noqa: F401  (register the image encoders)
from crt.models.critic import BatchedCritic
from crt.models.flow import build_maf, calibrate_batchnorm
from crt.models.mlp import MLP, build_encoder
from crt.models.prior import ClassPrior

__all__ = ["MLP", "build_encoder", "build_maf", "calibrate_batchnorm", "BatchedCritic", "ClassPrior"]
