"""Types of wae_fast._C, the compiled CPU backend (csrc/mmd.cpp, csrc/mmd_perm.cpp, csrc/mmd_agg.cpp).

Arrays are passed through the buffer protocol (numpy arrays, e.g. ``tensor.numpy()``): 2-D, float32 or
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

def mmd_fused(
    x: Buffer,
    y: Buffer,
    *,
    kernel: int,
    bandwidths: Sequence[float],
    unbiased: bool,
    weights: Sequence[float],
    coefficients: Sequence[float],
    grad_x: Buffer | None = None,
    grad_y: Buffer | None = None,
    threads: int = 1,
    isa: str | None = None,
) -> float: ...
def mmd_block_sums(
    x: Buffer,
    y: Buffer,
    *,
    kernel: int,
    bandwidths: Sequence[float],
    unbiased: bool,
    weights: Sequence[float],
    coefficients: Sequence[float],
    x_rows: tuple[int, int],
    y_rows: tuple[int, int],
    grad_x: Buffer | None = None,
    grad_y: Buffer | None = None,
    threads: int = 1,
    isa: str | None = None,
) -> tuple[float, float, float, float, float]: ...
def mmd_perm_sums(
    z: Buffer,
    labels: Buffer,
    *,
    kernel: int,
    bandwidths: Sequence[float],
    sums: Buffer,
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
    threads: int = 1,
    isa: str | None = None,
) -> None: ...
def peak_fma_gflops(threads: int, seconds: float, *, dtype: str = "float32", isa: str | None = None) -> float: ...
def isa_paths() -> list[dict[str, Any]]: ...
def build_info() -> dict[str, Any]: ...
