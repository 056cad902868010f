"""A ConvLSTM autoencoder for clips (T, C, H, W): MONAI has none. Frames are encoded by
strided convolutions, a ConvLSTM runs over time, and a decoder rebuilds each frame from
its hidden state. An optional classifier reads the last latent; the latents are returned."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvLSTMCell", "ConvLSTMAutoencoder"]


class ConvLSTMCell(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def _block(cin: int, cout: int, down: bool) -> nn.Module:
    conv = (
        nn.Conv2d(cin, cout, 4, stride=2, padding=1)
        if down
        else nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    )
    return nn.Sequential(conv, nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class ConvLSTMAutoencoder(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        hidden: int = 32,
        depth: int = 3,
        num_classes: int = 0,
    ):
        super().__init__()
        widths = [width * 2**i for i in range(depth)]
        self.encoder = nn.Sequential(
            *[_block(c, w, True) for c, w in zip([in_channels, *widths], widths)]
        )
        self.lstm = ConvLSTMCell(widths[-1], hidden)
        ups = [hidden, *reversed(widths[:-1])]
        self.decoder = nn.Sequential(
            *[_block(c, w, False) for c, w in zip(ups, [*reversed(widths[:-1]), width])],
            nn.Conv2d(width, in_channels, 3, padding=1),
        )
        self.classifier = nn.Linear(hidden, num_classes) if num_classes else None

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames = clip.shape[:2]
        encoded = self.encoder(clip.flatten(0, 1)).unflatten(0, (batch, frames))
        state, latents = None, []
        for t in range(frames):
            h, state = self.lstm(encoded[:, t], state)
            latents.append(h)
        latent = torch.stack(latents, dim=1)
        recon = self.decoder(latent.flatten(0, 1)).unflatten(0, (batch, frames))
        out = {"reconstruction": recon, "latents": latent}
        if self.classifier is not None:
            out["logits"] = self.classifier(latent[:, -1].mean(dim=(-2, -1)))
        return out
