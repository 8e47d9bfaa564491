"""Test configuration shared by every test module.

Without a GPU, the Triton kernels run through Triton's interpreter, which must be switched on before
triton is first imported: this happens here, before any test module imports wae_fast's Triton backend.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# CI runs a fixed set of examples, so a red build is reproducible from its log.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def poisoned_buffers(monkeypatch):
    """Every output buffer a fused backend's launcher allocates (wae_fast.backends.new_buffer, the one
    seam both use) starts as NaN, so an element a kernel forgets to write cannot pass; the list records
    what was allocated."""
    import wae_fast.backends

    allocated = []

    def new_buffer(shape, dtype, device):
        buffer = torch.full(shape, float("nan"), dtype=dtype, device=device)
        allocated.append(buffer)
        return buffer

    monkeypatch.setattr(wae_fast.backends, "new_buffer", new_buffer)
    return allocated
