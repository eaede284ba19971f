"""The demixing flow f: z -> s, a masked autoregressive flow built from nflows transforms."""

from __future__ import annotations

import torch
from nflows.transforms import (
    BatchNorm,
    CompositeTransform,
    MaskedAffineAutoregressiveTransform,
    ReversePermutation,
)


def build_maf(dim: int, blocks: int = 4, hidden: int = 128, made_layers: int = 2,
              batch_norm: bool = True) -> CompositeTransform:
    """MAF: `blocks` MADEs (each `made_layers` hidden layers of `hidden` ReLU units), order reversed
    between blocks, a batch-norm after every block. forward(z) -> (s, log|det df/dz|) is the parallel pass.
    """
    layers = []
    for i in range(blocks):
        if i > 0:
            layers.append(ReversePermutation(dim))
        layers.append(MaskedAffineAutoregressiveTransform(
            features=dim, hidden_features=hidden, num_blocks=made_layers - 1, use_residual_blocks=False,
        ))
        if batch_norm:
            bn = BatchNorm(dim)
            bn.running_var.fill_(1.0)  # nflows starts it at 0, which makes an untrained flow blow up in eval
            layers.append(bn)
    return CompositeTransform(layers)


@torch.no_grad()
def calibrate_batchnorm(flow: CompositeTransform, z: torch.Tensor) -> None:
    """Set every batch-norm's running statistics to the exact statistics of `z` as it reaches that layer.

    Running averages from training lag behind the flow's last updates; after this, eval mode standardises
    the training features exactly.
    """
    was_training = flow.training
    flow.eval()
    x = z
    for t in flow._transforms:
        if isinstance(t, BatchNorm):
            t.running_mean.copy_(x.mean(0))
            t.running_var.copy_(x.var(0))
        x, _ = t(x)
    flow.train(was_training)
