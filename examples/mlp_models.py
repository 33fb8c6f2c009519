"""Fully connected example models (plain PyTorch, loaded by file path): the FC-heavy counterpart of
examples/models.py, where the Linear layers are nearly all of the compute.

`digits_mlp` is the model for weight sparsity on FullyConnected layers (OpenVINO's sparse weight
decompression packs int8 FullyConnected weights whose two dimensions are multiples of 64): a digits image
flattened, two wide hidden layers, ten logits.

```yaml
model:
  source: ../examples/mlp_models.py:digits_mlp
  input_shape: [1, 1, 32, 32]           # 1024 inputs; or [1, 1, 8, 8] with kwargs {image_size: 8}
```
"""

from __future__ import annotations

from torch import nn


def digits_mlp(
    num_classes: int = 10, in_channels: int = 1, image_size: int = 32, hidden: int = 1024, depth: int = 2
) -> nn.Module:
    """Flatten -> `depth` x (Linear(hidden) -> ReLU) -> Linear(num_classes).

    At the defaults (32x32 grayscale digits): 1024-1024-1024-10, 2.1 M MACs, all in the three Linear layers;
    the hidden layers' weights (1024x1024, 1024x1024) have both dimensions multiples of 64."""
    if min(num_classes, in_channels, image_size, hidden, depth) < 1:
        raise ValueError("num_classes, in_channels, image_size, hidden and depth must be positive")
    width = in_channels * image_size * image_size
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
