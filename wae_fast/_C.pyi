"""Types of wae_fast._C, the compiled CPU backend (csrc/mmd.cpp, csrc/mmd_perm.cpp, csrc/mmd_agg.cpp).

mmd_sums takes the addresses of C-contiguous arrays its caller has checked (wae_fast.backends.cpu);
mmd_perm_sums takes buffer-protocol arrays (numpy arrays, e.g. ``tensor.numpy()``): 2-D, float32 or
float64, C-contiguous; outputs writable. The docstrings of the compiled functions give the contract.
"""
from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

__version__: str
max_scales: int
kernel_ids: dict[str, int]
sweep_modes: dict[str, int]
compiled_isas: list[str]
selected_isa: str

def mmd_sums(
    x: int,
    y: int,
    n: int,
    m: int,
    d: int,
    f64: bool,
    kernel: int,
    bandwidths: Sequence[float],
    unbiased: bool,
    weights: Sequence[float],
    coefficients: Sequence[float],
    rescale: Sequence[int],
    x_begin: int,
    x_end: int,
    y_begin: int,
    y_end: int,
    grad_x: int,
    grad_y: int,
    threads: int,
    isa: str | None,
) -> tuple[float, float, float, float, float]: ...
def mmd_perm_sums(
    z: Buffer,
    labels: Buffer,
    *,
    kernel: int,
    bandwidths: Sequence[float],
    sums: Buffer,
    rescale: Sequence[int],
    threads: int = 1,
    isa: str | None = None,
) -> float: ...
def mmd_agg_sums(
    z: Buffer,
    labels: Buffer,
    *,
    kernels: Sequence[int],
    bandwidths: Sequence[float],
    sums: Buffer,
    totals: Buffer,
    rescale: Sequence[int],
    threads: int = 1,
    isa: str | None = None,
) -> None: ...
def peak_fma_gflops(threads: int, seconds: float, *, dtype: str = "float32", isa: str | None = None) -> float: ...
def isa_paths() -> list[dict[str, Any]]: ...
def build_info() -> dict[str, Any]: ...
