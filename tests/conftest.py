"""Test configuration shared by every test module.

Without a GPU, the Triton kernels run through Triton's interpreter, which must be switched on before
triton is first imported: this happens here, before any test module imports wae_fast's Triton backend.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
