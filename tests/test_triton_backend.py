"""The fused Triton backend (wae_fast/backends/triton_mmd.py) against the dense reference.

Without a GPU the kernels run through Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before triton is imported); with CUDA the same tests run compiled. Without either, the module is
skipped with the reason, unless CI requires the backend (WAE_FAST_REQUIRE_BACKENDS), then it fails.

Every buffer the launchers allocate is filled with NaN first, so an output the kernels forget to write
cannot pass. Gradients of the reference come from autograd in float64, on the very same (rounded)
inputs. float16/bfloat16 inputs are centred and the centred copy is rounded back to the input dtype
(so that the distance dot runs on tensor cores in that dtype): their coordinates move by up to 2^-11
(float16) or 2^-8 (bfloat16) of their centred size, and their tolerances say so.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import wae_fast
from helpers import assert_close, float64_reference, mmd_and_grads, required_backends
from wae_fast import spec
from wae_fast.backends import _triton_common as common
from wae_fast.backends import _triton_prepare, _triton_tiles, triton_configs, triton_mmd
from wae_fast.kernels import OFFICIAL_SCALES

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
_OK, _REASON = triton_mmd.is_available(DEVICE)

pytestmark = pytest.mark.skipif(
    not _OK and "triton" not in required_backends(),
    reason=f"Triton backend unavailable on {DEVICE}: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (n, m, d, scales, duplicate a row of x): odd sizes, n ≠ m, ragged tiles, the official 7 scales.
SHAPES = [
    (2, 3, 1, (1.0,), False),
    (3, 2, 8, OFFICIAL_SCALES, True),
    (63, 40, 33, OFFICIAL_SCALES, False),
    (257, 63, 64, (0.5, 2.0), True),
    (40, 257, 1, OFFICIAL_SCALES, True),
    (257, 2, 8, (1.0,), False),
]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# (absolute value tolerance per scale, gradient tolerance relative to the gradient's largest entry)
TOLERANCES = {
    torch.float64: (1e-12, 1e-10),
    torch.float32: (2e-6, 2e-5),
    torch.float16: (4e-4, 4e-3),
    torch.bfloat16: (3e-3, 3e-2),
}


@pytest.fixture(autouse=True)
def _poison_every_buffer(poisoned_buffers):
    """Every launcher allocation in this module starts as NaN (the conftest fixture)."""
    return poisoned_buffers


@pytest.fixture(params=["small", "sweep"])
def launch_path(request, monkeypatch):
    """Both launch sequences: the one-program small-problem kernel (every n + m the tests use fits it) and
    prepare → sweep → finish (forced by a threshold of 0)."""
    monkeypatch.setattr(triton_configs, "SMALL_ROWS", 10 ** 9 if request.param == "small" else 0)
    return request.param


def _make_inputs(n, m, d, dtype, duplicate, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.2 + 0.3
    y = torch.randn(m, d, generator=g, dtype=torch.float64)
    if duplicate:  # a zero distance off the diagonal
        x[-1] = x[0]
    return x.to(dtype).to(DEVICE), y.to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: str(t).replace("torch.", ""))
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}-m{s[1]}-d{s[2]}-s{len(s[3])}")
def test_mmd_and_grads_matchfloat64_reference(shape, unbiased, kernel, dtype, poisoned_buffers, launch_path):
    n, m, d, scales, duplicate = shape
    x, y = _make_inputs(n, m, d, dtype, duplicate)
    bandwidths = tuple(s * 2.0 * d for s in scales)
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, kernel, bandwidths, unbiased, True, True)

    assert value.shape == () and value.dtype == dtype
    assert grad_x.shape == (n, d) and grad_x.dtype == dtype
    assert grad_y.shape == (m, d) and grad_y.dtype == dtype
    assert poisoned_buffers, "the launchers did not allocate through backends.new_buffer"
    want_value, want_gx, want_gy = float64_reference(x, y, kernel, bandwidths, unbiased)
    value_tol, grad_rtol = TOLERANCES[dtype]
    # the value comes back in the input dtype: its rounding (half an ulp) on top of the kernel's error
    rounding = abs(want_value.item()) * torch.finfo(dtype).eps
    assert_close(value, want_value, atol=value_tol * len(scales) + rounding, what="value")
    assert_close(grad_x, want_gx, rtol_of_max=grad_rtol, what="grad x")
    assert_close(grad_y, want_gy, rtol_of_max=grad_rtol, what="grad y")


@pytest.mark.parametrize("dtype, blocks", [
    (torch.float64, (16, 32, 0, 0)), (torch.float64, (32, 16, 16, 16)), (torch.bfloat16, (16, 16, 16, 32)),
], ids=["float64-bm16-bn32", "float64-bm32-bn16-chunked", "bfloat16-bm16-bn16-chunked"])
@pytest.mark.parametrize("unbiased", [True, False], ids=["unbiased", "biased"])
def test_small_blocks_many_tiles(blocks, unbiased, dtype, monkeypatch, launch_path):
    """Many ragged tiles, BLOCK_M ≠ BLOCK_N, diagonal tiles off the grid's diagonal, d split into
    BLOCK_K-wide chunks for the distance dot and BLOCK_G-wide gradient column blocks, and the columns
    split into 3 chunks over the grid's third axis (the compiled path's chunking; the interpreter runs
    it only here). Compiled runs use the GPU config table."""
    bm, bn, bk, bg = blocks
    monkeypatch.setattr(triton_configs, "INTERPRETER_BLOCKS",
                        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "BLOCK_G": bg})
    monkeypatch.setattr(triton_configs, "INTERPRETER_COLUMN_CHUNKS", 3)
    x, y = _make_inputs(70, 45, 33, dtype, True, seed=6)
    bandwidths = tuple(s * 66.0 for s in OFFICIAL_SCALES)
    value_tol, grad_rtol = TOLERANCES[dtype]
    for kernel in ("imq", "rbf"):
        value, grad_x, grad_y = mmd_and_grads("triton", x, y, kernel, bandwidths, unbiased, True, True)
        want = float64_reference(x, y, kernel, bandwidths, unbiased)
        rounding = abs(want[0].item()) * torch.finfo(dtype).eps  # the value in the input dtype
        assert_close(value, want[0], atol=value_tol * 7 + rounding, what="value")
        assert_close(grad_x, want[1], rtol_of_max=grad_rtol, what="grad x")
        assert_close(grad_y, want[2], rtol_of_max=grad_rtol, what="grad y")


def test_d_blocks_chunk_only_wide_rows():
    """Rows up to 128 wide stay in registers; wider ones are chunked (BLOCK_K) and, with a gradient,
    split over gradient column blocks (BLOCK_G); without one, a single gradient block."""
    for block_d in (16, 64, 128):
        assert triton_configs.d_blocks(block_d, True) == {"BLOCK_K": block_d, "BLOCK_G": block_d}
    for block_d in (256, 1024):
        assert triton_configs.d_blocks(block_d, True) == {"BLOCK_K": 64, "BLOCK_G": 64}
        assert triton_configs.d_blocks(block_d, False) == {"BLOCK_K": 64, "BLOCK_G": block_d}


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_wide_features_d256(kernel):
    x, y = _make_inputs(5, 7, 256, torch.float32, False, seed=3)
    bandwidths = tuple(s * 512.0 for s in OFFICIAL_SCALES)
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, kernel, bandwidths, True, True, True)
    want_value, want_gx, want_gy = float64_reference(x, y, kernel, bandwidths, True)
    assert_close(value, want_value, atol=2e-6 * 7, what="value")
    assert_close(grad_x, want_gx, rtol_of_max=2e-5, what="grad x")
    assert_close(grad_y, want_gy, rtol_of_max=2e-5, what="grad y")


@pytest.mark.parametrize("need_x, need_y", [(True, False), (False, True), (False, False)])
def test_gradients_only_when_requested(need_x, need_y):
    x, y = _make_inputs(65, 33, 8, torch.float32, False, seed=1)
    bandwidths = (16.0, 4.0)
    full = mmd_and_grads("triton", x, y, "imq", bandwidths, True, True, True)
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, "imq", bandwidths, True, need_x, need_y)
    # Without ∂/∂y the y–y block is swept as a triangle: the same value up to the summation order.
    assert torch.allclose(value, full[0], rtol=1e-6, atol=1e-7)
    assert (grad_x is not None) == need_x and (grad_y is not None) == need_y
    if need_x:
        assert torch.equal(grad_x, full[1])
    if need_y:
        assert torch.equal(grad_y, full[2])


def test_bitwise_reproducible():
    x, y = _make_inputs(130, 70, 16, torch.float32, False, seed=2)
    first = mmd_and_grads("triton", x, y, "rbf", OFFICIAL_SCALES, True, True, True)
    second = mmd_and_grads("triton", x, y, "rbf", OFFICIAL_SCALES, True, True, True)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_strided_inputs():
    """A row-strided view is read in place; a column-strided one is made contiguous first."""
    x_big, y = _make_inputs(40, 9, 12, torch.float64, False, seed=4)
    for x in (x_big[::2], x_big[:, ::2]):
        value, grad_x, grad_y = mmd_and_grads("triton", x, y[:, : x.shape[1]], "imq", (3.0,), True,
                                                         True, True)
        want = float64_reference(x, y[:, : x.shape[1]], "imq", (3.0,), True)
        assert_close(value, want[0], atol=1e-12, what="value")
        assert_close(grad_x, want[1], rtol_of_max=1e-10, what="grad x")
        assert_close(grad_y, want[2], rtol_of_max=1e-10, what="grad y")


def test_nan_propagates():
    x, y = _make_inputs(9, 6, 3, torch.float32, False)
    x[4, 1] = float("nan")
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, "imq", (6.0,), True, True, True)
    assert torch.isnan(value)
    assert torch.isnan(grad_x[4]).all() and torch.isnan(grad_y).any()


def test_very_wide_features():
    """d = 1000: no limit on d (compiled, rows are chunked over d; interpreted, one padded tile)."""
    x, y = _make_inputs(3, 4, 1000, torch.float32, False, seed=7)
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, "rbf", (2000.0, 500.0), True, True, True)
    want = float64_reference(x, y, "rbf", (2000.0, 500.0), True)
    assert_close(value, want[0], atol=2e-6 * 2, what="value")
    assert_close(grad_x, want[1], rtol_of_max=2e-5, what="grad x")
    assert_close(grad_y, want[2], rtol_of_max=2e-5, what="grad y")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_public_api_backend_triton(kernel, dtype):
    """wae_fast.mmd(backend="triton") through the custom op, with a non-unit upstream gradient."""
    x, y = _make_inputs(70, 45, 8, dtype, True, seed=5)
    xf = x.clone().requires_grad_(True)
    yf = y.clone().requires_grad_(True)
    value = wae_fast.mmd(xf, yf, kernel, scales=OFFICIAL_SCALES, backend="triton")
    assert value.dtype == dtype
    (value * -2.5).backward()
    assert xf.grad.dtype == dtype and yf.grad.dtype == dtype

    bandwidths = tuple(s * 16.0 for s in OFFICIAL_SCALES)
    want_value, want_gx, want_gy = float64_reference(x, y, kernel, bandwidths, True)
    if dtype == torch.float32:
        assert_close(value, want_value, atol=2e-6 * 7, what="value")
        assert_close(xf.grad, -2.5 * want_gx, rtol_of_max=2e-5, what="grad x")
        assert_close(yf.grad, -2.5 * want_gy, rtol_of_max=2e-5, what="grad y")
    else:  # results are rounded to bfloat16 (8 significant bits) on the way out
        assert_close(value, want_value, atol=1e-2 * max(abs(want_value.item()), 1e-3), what="value")
        assert_close(xf.grad, -2.5 * want_gx, rtol_of_max=1e-2, what="grad x")
        assert_close(yf.grad, -2.5 * want_gy, rtol_of_max=1e-2, what="grad y")


def test_compiles_for_nvidia_gpus_without_one():
    """Ahead-of-time compile of every kernel (sweep, small-problem, prepare, finish) to sm_90 machine code
    with triton's bundled ptxas (no GPU needed): every dtype, the FULL/TRIANGLE/cross sweeps,
    register-resident and chunked rows, final and partial gradients, every float32 tensor-core dot and the
    bfloat16 split gradient dot: the compiled path's lowering, which the interpreter does not exercise
    (scripts/triton_aot.py)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "triton_aot.py")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 23 and all(line.endswith(" ok") for line in lines), result.stdout
    assert {line.split()[0] for line in lines} == {"sweep", "small", "prepare", "finish"}
    dots = {line.split("dots=")[1].split()[0] for line in lines if "dots=" in line}
    assert dots == {"tf32x3", "tf32split", "bf16p2", "bf16p3", "ieee"}
    assert {line.split()[1] for line in lines} == {"fp32", "fp16", "bf16", "fp64"}


def test_is_available_here():
    assert triton_mmd.is_available(DEVICE) == (True, "")
    ok, reason = triton_mmd.is_available(torch.device("meta"))
    assert not ok and "meta" in reason


def _run_isolated(code, env_update):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(env_update)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_module_skips_with_reason_without_interpreter():
    """TRITON_INTERPRET=0 and no CUDA: this module is skipped and says why (unless CI requires it)."""
    env = {k: v for k, v in os.environ.items() if k != "WAE_FAST_REQUIRE_BACKENDS"}
    env.update(TRITON_INTERPRET="0", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", os.path.abspath(__file__),
         "-k", "test_is_available_here"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "1 skipped" in result.stdout, result.stdout + result.stderr
    assert "TRITON_INTERPRET=1" in result.stdout


def test_is_available_explains_missing_interpreter():
    """Without TRITON_INTERPRET, CPU tensors are refused, and the reason says what to set."""
    out = _run_isolated("""
        import torch, wae_fast
        from wae_fast.backends import triton_mmd
        ok, reason = triton_mmd.is_available(torch.device("cpu"))
        print(ok)
        print(reason)
        x = torch.randn(4, 3)
        try:
            wae_fast.mmd(x, x, backend="triton")
        except RuntimeError as exc:
            print("raised:", exc)
    """, {"CUDA_VISIBLE_DEVICES": ""})
    lines = out.splitlines()
    assert lines[0] == "False"
    assert "TRITON_INTERPRET=1" in lines[1] and "before triton is" in lines[1]
    assert lines[2].startswith("raised:") and "TRITON_INTERPRET=1" in lines[2]


def test_is_available_explains_missing_triton():
    out = _run_isolated("""
        import sys
        sys.modules["triton"] = None  # as if triton were not installed
        import torch
        from wae_fast.backends import triton_mmd
        print(triton_mmd.is_available(torch.device("cpu")))
    """, {})
    assert "False" in out and "triton is not installed" in out


def test_is_available_explains_late_interpreter_switch():
    """TRITON_INTERPRET set only after triton was imported: refused, and the reason says so."""
    out = _run_isolated("""
        import os, torch
        import triton
        os.environ["TRITON_INTERPRET"] = "1"
        from wae_fast.backends import triton_mmd
        print(triton_mmd.is_available(torch.device("cpu")))
    """, {"CUDA_VISIBLE_DEVICES": ""})
    assert "False" in out and "half on" in out and "before triton is first imported" in out
    out = _run_isolated("""
        import os, torch
        from wae_fast.backends import triton_mmd
        os.environ["TRITON_INTERPRET"] = "1"
        print(triton_mmd.is_available(torch.device("cpu")))
    """, {"CUDA_VISIBLE_DEVICES": ""})
    assert "False" in out and "was not when triton was first imported" in out


def test_config_file_replaces_the_table(tmp_path, monkeypatch):
    """WAE_FAST_TRITON_CONFIGS (what scripts/triton_tune.py writes) replaces GPU_CONFIGS' entries it
    names, keeps the others, and refuses unknown precisions with the file named."""
    path = tmp_path / "tuned.json"
    path.write_text('{"float32": {"64": [32, 64, 4, 3, "ieee", "tf32x3", "rcp.approx"]}, '
                    '"bfloat16": {"16": [64, 32, 8, 2]}}')
    monkeypatch.setenv("WAE_FAST_TRITON_CONFIGS", str(path))
    assert triton_configs.gpu_config(torch.float32, 64) == (32, 64, 4, 3, "ieee", "tf32x3", "rcp.approx")
    assert triton_configs.gpu_config(torch.bfloat16, 16) == (64, 32, 8, 2, "tf32x3", "tf32x3", "div.full")
    assert triton_configs.gpu_config(torch.float32, 16) == triton_configs.GPU_CONFIGS[torch.float32][16]
    bad = tmp_path / "bad.json"
    bad.write_text('{"float32": {"64": [32, 64, 4, 3, "tf32"]}}')
    monkeypatch.setenv("WAE_FAST_TRITON_CONFIGS", str(bad))
    with pytest.raises(ValueError, match="bad.json: precisions must be in"):
        triton_configs.gpu_config(torch.float32, 64)


# ----------------------------------------------------------------------------------------------------
# The float32 dot precisions and their building blocks
# ----------------------------------------------------------------------------------------------------

#: (distance dot, gradient dot) and the gradient tolerance, relative to the largest entry: the
#: float32-level ones at float32's (TOLERANCES), "bf16p2" (16-bit operands) at 2e-4.
PRECISION_PAIRS = [("tf32x3", "tf32x3", 2e-5), ("tf32split", "tf32split", 2e-5), ("bf16p3", "bf16p3", 2e-5),
                   ("tf32split", "bf16p3", 2e-5), ("ieee", "ieee", 2e-5), ("bf16p2", "bf16p2", 2e-4)]


@pytest.mark.parametrize("dist, grad, grad_rtol", PRECISION_PAIRS, ids=[f"{a}-{b}" for a, b, _ in PRECISION_PAIRS])
@pytest.mark.parametrize("shape", [(40, 257, 1, OFFICIAL_SCALES, True), (63, 40, 33, (1.0,), False)],
                         ids=["n40-m257-d1-s7", "n63-m40-d33-s1"])
def test_every_float32_dot_precision(shape, dist, grad, grad_rtol, monkeypatch):
    """Each float32 dot precision of the config table, for both dots, against float64 on the same
    inputs: far from the origin, a duplicated row, 7 scales at d = 1 (the case that tells 16-bit operands
    from float32-level ones: bf16p2 misses the float32 tolerance there), and the chunk-free d = 33."""
    n, m, d, scales, duplicate = shape
    x, y = _make_inputs(n, m, d, torch.float32, duplicate, seed=3)
    x, y = x + 300.0, y + 300.0
    config = triton_configs.GpuConfig(64, 64, 4, 2, dist, grad, "rcp.approx")
    monkeypatch.setattr(triton_configs, "gpu_config", lambda dtype, block_d: config)
    bandwidths = tuple(s * 2.0 * d for s in scales)
    value, grad_x, grad_y = mmd_and_grads("triton", x, y, "imq", bandwidths, True, True, True)
    want_value, want_gx, want_gy = float64_reference(x, y, "imq", bandwidths, True)
    assert_close(value, want_value, atol=TOLERANCES[torch.float32][0] * len(scales), what="value")
    assert_close(grad_x, want_gx, rtol_of_max=grad_rtol, what="grad x")
    assert_close(grad_y, want_gy, rtol_of_max=grad_rtol, what="grad y")


def _bf16_parts(values, precision):
    """_split_bf16 of a float32 vector under the interpreter (BY_BITS) or compiled: (hi, mid, lo) float32."""
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(p_x, p_hi, p_mid, p_lo, PRECISION: tl.constexpr, BY_BITS: tl.constexpr,
                     BLOCK: tl.constexpr):
        o = tl.arange(0, BLOCK)
        b_hi, b_mid, b_lo = _triton_tiles.split_bf16(tl.load(p_x + o), PRECISION, BY_BITS)
        tl.store(p_hi + o, b_hi.to(tl.float32))
        tl.store(p_mid + o, b_mid.to(tl.float32))
        tl.store(p_lo + o, b_lo.to(tl.float32))

    hi, mid, lo = (torch.empty_like(values) for _ in range(3))
    split_kernel[(1,)](values, hi, mid, lo, precision, common.interpreting(), values.numel())
    return hi, mid, lo


@pytest.mark.parametrize("precision", ["bf16p2", "bf16p3"])
def test_bf16_split_rounds_to_nearest_and_reconstructs(precision):
    """bf16p2: the first part is x rounded to nearest bfloat16 (the interpreter's own conversion truncates:
    the bits are rounded first) and hi + mid rebuild x to 2⁻¹⁶ of |x|; bf16p3: the first part is x cut
    to its leading 8 significant bits and hi + mid + lo == x exactly; over magnitudes from 1e-30 to 1e30
    and both signs."""
    g = torch.Generator().manual_seed(0)
    mantissas = torch.rand(1024, generator=g, dtype=torch.float64) + 1.0
    exponents = torch.randint(-99, 100, (1024,), generator=g).double()
    signs = torch.where(torch.rand(1024, generator=g) < 0.5, -1.0, 1.0).double()
    values = (signs * mantissas * 2.0 ** exponents).float().to(DEVICE)
    hi, mid, lo = _bf16_parts(values, precision)
    if precision == "bf16p3":
        cut = (values.view(torch.int32) & -65536).view(torch.float32)
        assert torch.equal(hi, cut), "hi is not x's leading 8 significant bits"
        assert torch.equal(hi.double() + mid.double() + lo.double(), values.double())
        for part in (mid, lo):
            assert (part.view(torch.int32) & 0xFFFF).eq(0).all(), "a part is not a bfloat16 value"
        return
    assert torch.equal(hi, values.to(torch.bfloat16).float()), "hi is not x rounded to nearest bfloat16"
    error = ((hi.double() + mid.double() - values.double()).abs() / values.double().abs()).max().item()
    assert 2.0 ** -23 < error <= 2.0 ** -16, error  # two parts really stop at 16 bits


def test_tf32_split_is_exact_with_an_11_bit_big_part():
    """_split_tf32: big + small == x exactly, big has at most 11 significant bits (what a TF32 product
    reads), and small is below 2⁻¹⁰ of |x|."""
    import triton
    import triton.language as tl

    @triton.jit
    def split_kernel(p_x, p_big, p_small, BLOCK: tl.constexpr):
        o = tl.arange(0, BLOCK)
        b_big, b_small = _triton_tiles.split_tf32(tl.load(p_x + o))
        tl.store(p_big + o, b_big)
        tl.store(p_small + o, b_small)

    g = torch.Generator().manual_seed(1)
    values = (torch.randn(1024, generator=g) * 10.0 ** torch.randint(-20, 20, (1024,), generator=g)).to(DEVICE)
    big, small = torch.empty_like(values), torch.empty_like(values)
    split_kernel[(1,)](values, big, small, values.numel())
    assert torch.equal(big + small, values)
    assert (big.view(torch.int32) & 0x1FFF).eq(0).all(), "big keeps more than 11 significant bits"
    assert (small.abs() <= values.abs() * 2.0 ** -10).all()


def test_prepare_centres_rescales_and_pads():
    """The sweep's inputs (_triton_prepare.prepare): the centred copies of x then y, multiplied by 2^−E
    (spec.rescale_exponent from the largest centred |coordinate|), rounded to the input dtype (bfloat16
    here) and padded with zero columns to BLOCK_D (so loads mask rows only); their squared norms in the
    compute type (float32 here) at the start of the scratch; then 2^−E, the poison (0) and a bound on the
    squared norms (Σ_k of the squared column spreads, rescaled)."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(37, 9, generator=g) * 5 + 100).to(torch.bfloat16).to(DEVICE)
    y = (torch.randn(20, 9, generator=g) * 3 + 90).to(torch.bfloat16).to(DEVICE)
    bandwidths = (18.0, 1.8)
    copy, scratch = _triton_prepare.prepare(x, y, bandwidths, 3)
    assert copy.shape == (57, 16) and copy.dtype == torch.bfloat16 and copy.is_contiguous()
    assert scratch.shape == (57 + _triton_prepare.PREPARE_HEADER + 3,) and scratch.dtype == torch.float64
    assert copy[:, 9:].eq(0).all()
    pooled = torch.cat([x, y]).double().cpu()
    centre = pooled.mean(0)
    spread = (pooled - centre).abs().max().item()
    exponent = spec.rescale_exponent(spec.frexp_exponent(spread), spec.bandwidth_exponents(bandwidths), 9,
                                     torch.float32)
    assert exponent is not None and scratch[57].item() == 2.0 ** -exponent
    assert scratch[58].item() == 0.0
    want = ((pooled * 2.0 ** -exponent).float() - (centre * 2.0 ** -exponent).float()).to(torch.bfloat16).double()
    assert torch.equal(copy[:, :9].double().cpu(), want)
    norms = _triton_prepare.norms_view(scratch, 57, x.dtype)
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms.double().cpu(), (want * want).sum(1), rtol=1e-6, atol=0)
    spreads = torch.maximum(pooled.max(0).values - centre, centre - pooled.min(0).values) * 2.0 ** -exponent
    assert scratch[59].item() == pytest.approx((spreads * spreads).sum().item(), rel=1e-12)
    assert scratch[59].item() >= norms.max().item()


@pytest.mark.parametrize("d, blocks, grad, expected", [
    (8, (16, 16, 16), True, True), (16, (16, 16, 16), True, False), (33, (64, 64, 64), True, True),
    (8, (16, 16, 16), False, False), (200, (256, 64, 64), True, False)])
def test_rowsum_by_dot_only_with_a_spare_column(d, blocks, grad, expected):
    """The gradient's row sums ride in its dot only when the row is one column block with a padding
    column to spare (d < BLOCK_D); the chunked and the value-only launches sum them as before."""
    block_d, block_k, block_g = blocks
    assert triton_configs.rowsum_by_dot(d, block_d, block_k, block_g, grad) is expected


def test_kernel_constants_are_made_once(monkeypatch):
    """The bandwidths go to the device once per (values, dtype, device) and the weights travel as kernel
    arguments: a repeated call builds no tensor from host values (each such copy from pageable memory
    would synchronise the host with the GPU), and different values get their own tensor."""
    x, y = _make_inputs(20, 17, 3, torch.float32, False)
    first = mmd_and_grads("triton", x, y, "imq", (6.0, 3.0), True, True, True)
    built = []
    original = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **k: built.append(a) or original(*a, **k))
    second = mmd_and_grads("triton", x, y, "imq", (6.0, 3.0), True, True, True)
    assert built == [], f"host values copied to the device again: {built}"
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    monkeypatch.undo()
    same = common.device_constants((6.0, 3.0), torch.float32, x.device)
    assert same is common.device_constants((6.0, 3.0), torch.float32, x.device)
    other = common.device_constants((6.0, 2.0), torch.float32, x.device)
    assert other is not same and other.tolist() == [6.0, 2.0]
    assert common.device_constants((6.0, 3.0), torch.float64, x.device).dtype == torch.float64
