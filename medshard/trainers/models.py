"""Models by name: MONAI networks for 2D and 3D classification, regression and
segmentation, a small VGG-style 3D CNN and the ConvLSTM autoencoder (MONAI has neither),
or any `module:callable`."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from medshard.trainers.config import ConfigError, TrainConfig
from medshard.trainers.convlstm import ConvLSTMAutoencoder

__all__ = ["build_model", "VGG3D", "head_prefixes"]


class VGG3D(nn.Module):
    """VGG-style 3D classifier: blocks of two 3x3x3 convolutions and a max-pool."""

    def __init__(self, in_channels: int, num_classes: int, widths=(16, 32, 64, 128)):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers += [
                nn.Conv3d(channels, width, 3, padding=1),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.Conv3d(width, width, 3, padding=1),
                nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(channels, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(
    config: TrainConfig, spatial_dims: int, in_channels: int, out_channels: int
) -> nn.Module:
    """The configured network; `out_channels` is classes, labels, 1, or mask classes."""
    from monai.networks import nets

    name, kwargs = config.model.name, dict(config.model.kwargs)
    out_channels = config.model.out_channels or out_channels
    if ":" in name:
        module, _, attribute = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model.name: cannot import {name!r} ({exc})") from exc
        return _call_factory(
            name,
            factory,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            **kwargs,
        )
    if name == "densenet121":
        return nets.DenseNet121(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs
        )
    if name in ("resnet18", "resnet34", "resnet50"):
        return getattr(nets, name)(
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_channels,
            **kwargs,
        )
    if name.startswith("efficientnet-"):
        return nets.EfficientNetBN(
            name,
            pretrained=False,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=out_channels,
            **kwargs,
        )
    if name == "unet":
        options = dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2) | kwargs
        return nets.UNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **options
        )
    if name == "vgg3d":
        return VGG3D(in_channels, out_channels, **kwargs)
    if name == "convlstm_ae":
        return ConvLSTMAutoencoder(in_channels=in_channels, **kwargs)
    raise ConfigError(
        f"model.name: unknown model {name!r} (densenet121, resnet18, resnet34, "
        "resnet50, efficientnet-b0 ... b7, unet, vgg3d, convlstm_ae, or module:callable)"
    )


def _call_factory(name: str, factory, **arguments) -> nn.Module:
    """A `module:callable` model, refused unless it builds a torch.nn.Module."""
    if not callable(factory):
        raise ConfigError(f"model.name: {name!r} is a {type(factory).__name__}, not a callable")
    try:
        model = factory(**arguments)
    except TypeError as exc:
        raise ConfigError(
            f"model.name: {name!r} cannot be called with spatial_dims, in_channels, "
            f"out_channels and model.kwargs ({exc})"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model.name: {name!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Names of the modules holding the network's last Linear layer(s): its head."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        return ()
    return (last.rsplit(".", 1)[0] if "." in last else last,)
