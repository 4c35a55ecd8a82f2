"""Small models shaped like real audio, speech, video and medical-volume networks, for rewrite and export tests.

Each keeps the layer patterns that make emulation hard (strided stems, grouped convolutions
under weight_norm, even kernels with 'same', reflect padding, transposed convolutions with
output_padding, skip connections) at sizes that run in milliseconds. ``make(name)`` returns
``(model, input)`` in eval mode with a fixed seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrizations

import convnd


class SamePad(nn.Module):
    """wav2vec 2.0's trim after an even-kernel positional conv: drop the last frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-1]


class Wav2VecLike(nn.Module):
    """Raw-waveform conv stem (strided Conv1d, GroupNorm, GELU) and a grouped, weight-normed positional conv."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, width, kernel_size=10, stride=5, bias=False),
            nn.GroupNorm(width, width),
            nn.GELU(),
            nn.Conv1d(width, width, kernel_size=3, stride=2, bias=False),
            nn.GELU(),
            nn.Conv1d(width, width, kernel_size=2, stride=2, bias=False),
            nn.GELU(),
        )
        positional = nn.Conv1d(width, width, kernel_size=8, padding=4, groups=4)
        self.positional = nn.Sequential(parametrizations.weight_norm(positional, name="weight", dim=2), SamePad())

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.stem(waveform)
        return features + nn.functional.gelu(self.positional(features))


class HifiGanLike(nn.Module):
    """A vocoder upsampler: ConvTranspose1d and dilated Conv1d, under the old torch.nn.utils.weight_norm hook."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        with warnings.catch_warnings():  # deprecated, but the hook real vocoder checkpoints were trained with
            warnings.simplefilter("ignore", FutureWarning)
            weight_norm = nn.utils.weight_norm
            self.pre = weight_norm(nn.Conv1d(4, width, kernel_size=7, padding=3))
            self.up = weight_norm(nn.ConvTranspose1d(width, width // 2, kernel_size=4, stride=2, padding=1))
            self.res = weight_norm(nn.Conv1d(width // 2, width // 2, kernel_size=3, dilation=3, padding="same"))
        self.post = nn.Conv1d(width // 2, 1, kernel_size=7, padding=3, padding_mode="reflect")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.up(nn.functional.leaky_relu(self.pre(mel), 0.1))
        x = x + self.res(nn.functional.leaky_relu(x, 0.1))
        return torch.tanh(self.post(x))


class ConformerSubsampling(nn.Module):
    """Speech front end: two strided 3x3 Conv2d over a spectrogram, then a depthwise Conv1d over time."""

    def __init__(self, width: int = 8, mels: int = 12) -> None:
        super().__init__()
        self.subsample = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2), nn.ReLU()
        )
        channels = width * ((mels - 1) // 2 - 1) // 2
        self.depthwise = nn.Conv1d(channels, channels, kernel_size=4, padding="same", groups=channels)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        x = self.subsample(spectrogram.unsqueeze(1))  # (B, C, T', F')
        x = x.permute(0, 1, 3, 2).flatten(1, 2)  # (B, C * F', T')
        return self.depthwise(x)


class VideoPatchEmbed(nn.Module):
    """A video transformer's tubelet embedding (Conv3d, stride = kernel) after a small Conv3d stem."""

    def __init__(self, width: int = 8, embed: int = 12) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, width, (3, 3, 3), padding=1), nn.BatchNorm3d(width), nn.ReLU())
        self.patch = nn.Conv3d(width, embed, kernel_size=(2, 4, 4), stride=(2, 4, 4))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.patch(self.stem(clip)).flatten(2).transpose(1, 2)  # (B, tokens, embed)


class VolumeUNet(nn.Module):
    """A medical-volume encoder/decoder: reflect-padded Conv3d, a strided down path, ConvTranspose3d, a skip."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm3d(width), nn.ReLU()
        )
        self.down = nn.Conv3d(width, 2 * width, 3, stride=2, padding=1, padding_mode="reflect")
        self.up = nn.ConvTranspose3d(2 * width, width, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Conv3d(2 * width, 2, kernel_size=1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        skip = self.enc(volume)
        x = self.up(nn.functional.relu(self.down(skip)))
        return self.head(torch.cat([x, skip], dim=1))


class LightField(nn.Module):
    """A 4-D (U, V, S, T) light-field network built from convnd's N-d modules."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = convnd.ConvNd(2, width, kernel_size=(2, 3, 3, 2), padding="same", padding_mode="replicate")
        self.up = convnd.ConvTransposeNd(width, 2, kernel_size=(2, 1, 2, 2), stride=(2, 1, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.conv(x)))


EXAMPLES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "wav2vec": (Wav2VecLike, (2, 1, 200)),
    "hifigan": (HifiGanLike, (2, 4, 16)),
    "conformer": (ConformerSubsampling, (2, 20, 12)),
    "video": (VideoPatchEmbed, (1, 3, 4, 8, 8)),
    "volume": (VolumeUNet, (1, 1, 6, 8, 6)),
    "lightfield": (LightField, (1, 2, 4, 3, 5, 4)),
}


def make(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The example model ``name`` (eval mode, seeded) and an input for it."""
    factory, shape = EXAMPLES[name]
    torch.manual_seed(0)
    return factory().eval(), torch.randn(shape)
