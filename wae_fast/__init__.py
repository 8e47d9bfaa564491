"""wae_fast: fused, O(n)-memory kernel MMD for PyTorch, and a Wasserstein Auto-Encoder trainer."""
from . import nn
from ._dispatch import backend_status, select_backend
from ._version import __version__
from .backends.cpu import build_info
from .functional import imq_mmd, mmd, rbf_mmd
from .kernels import OFFICIAL_SCALES
from .reference import mmd_reference

__all__ = ["__version__", "imq_mmd", "rbf_mmd", "mmd", "mmd_reference", "OFFICIAL_SCALES",
           "backend_status", "select_backend", "build_info", "nn"]
