"""convnd: one convolution for any number of spatial dims.

The rank follows the kernel; for 1-3 dims results are bit-identical to torch.nn,
past that convnd lowers onto torch's native kernels.
"""

from __future__ import annotations

from . import reference
from .animation import animate
from .emulation import Emulation, emulate
from .errors import ConvndError, ConvndTypeError, ConvndValueError
from .explanation import Explanation, explain
from .functional import conv, conv_transpose
from .modules import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvNd,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    ConvTransposeNd,
)
from .rewriting import rewrite
from .selection import strategy
from .spec import ConvSpec, make_spec

__version__ = "0.1.0"

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvNd",
    "ConvSpec",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "ConvTransposeNd",
    "ConvndError",
    "ConvndTypeError",
    "ConvndValueError",
    "Emulation",
    "Explanation",
    "animate",
    "conv",
    "conv_transpose",
    "emulate",
    "explain",
    "make_spec",
    "reference",
    "rewrite",
    "strategy",
]
