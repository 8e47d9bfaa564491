"""The Triton kernel of the aggregated tests (wae_fast/backends/triton_agg.py).

On a CUDA device when there is one, else through Triton's interpreter: every product precision against a
float64 dense oracle (each kernel's K₀ from direct differences, then the labellings' sums by literal
products), sizes that span several row blocks per row program, several labelling blocks and several
kernel chunks with the IMQ/RBF boundary inside a chunk; output buffers poisoned first; the argument
checks. And, without a GPU, the kernel compiled ahead of time to sm_90 machine code with triton's
bundled ptxas (the compiled lowering of the bfloat16 tensor-core products, which the interpreter does
not exercise).

Without a usable Triton backend the module is skipped with the reason, unless CI requires it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import required_backends
from wae_fast.backends import triton_agg
from wae_fast.stats import permutation_labels, unpack_labels
from wae_fast.stats.aggregate import CollectionSums, collection_statistics

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_OK, _REASON = triton_agg.is_available(torch.device(DEVICE))

pytestmark = pytest.mark.skipif(not _OK and "triton" not in required_backends(),
                                reason=f"Triton backend unavailable: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _oracle(z, labels, kernels, bandwidths):
    """(W [S, L], R [S, L], T [S], Q [S]) in float64 from direct differences and literal products."""
    zd = z.double().cpu()
    r = ((zd[:, None, :] - zd[None, :, :]) ** 2).sum(-1)
    u = unpack_labels(labels.cpu(), z.shape[0]).double()
    out = [], [], [], []
    for kernel, b in zip(kernels, bandwidths, strict=True):
        k = b / (b + r) if kernel == "imq" else torch.exp(-r / b)
        k.fill_diagonal_(0.0)
        for part, value in zip(out, (torch.einsum("pi,ij,pj->p", u, k, u), torch.einsum("pi,ij->p", u, k),
                                     k.sum(), (k * k).sum()), strict=True):
            part.append(value)
    return tuple(torch.stack(part) for part in out)


def _collection(count, seed):
    g = torch.Generator().manual_seed(seed)
    kernels = tuple("imq" if bool(b) else "rbf" for b in torch.rand(count, generator=g) < 0.5)
    return kernels, tuple(float(v) for v in 0.2 * 10.0 ** (2.0 * torch.rand(count, generator=g, dtype=torch.float64)))


# rows, d, kernels, labellings: a vector of 7 rows; 203 rows = 4 row blocks over 2 row programs, 150
# labellings = 2 labelling blocks; 17 mixed kernels = 2 kernel chunks.
CASES = [(7, 1, 1, 3), (203, 5, 5, 150), (90, 3, 17, 20)]


@pytest.mark.parametrize("dtype, product", [(torch.float32, "bf16p3"), (torch.float32, "tf32x3"),
                                            (torch.float32, "ieee"), (torch.float64, "ieee")])
@pytest.mark.parametrize("rows, d, count, labellings", CASES)
def test_sums_match_the_oracle(dtype, product, rows, d, count, labellings, poisoned_buffers):
    g = torch.Generator().manual_seed(rows)
    z = (torch.randn(rows, d, generator=g, dtype=torch.float64) + 20.0).to(dtype)
    n = rows // 3
    labels = permutation_labels(n, rows - n, labellings - 1, seed=4)
    kernels, bandwidths = _collection(count, rows)
    assert count < 3 or len(set(kernels)) == 2
    config = triton_agg.GPU_CONFIGS[dtype]._replace(product=product)
    got = triton_agg.collection_sums(z.to(DEVICE), labels.to(DEVICE), kernels, bandwidths, config=config)
    want = _oracle(z, labels, kernels, bandwidths)
    rel = 1e-12 if dtype == torch.float64 else 3e-6
    for name, g_, w in zip(("within", "member_rows", "total", "squares"), got, want, strict=True):
        assert g_.dtype == torch.float64 and g_.shape == w.shape, name
        tol = rel * w.abs().amax(dim=-1, keepdim=True) + 1e-300
        assert bool(((g_.cpu() - w).abs() <= tol).all()), (name, float((g_.cpu() - w).abs().max()))
    # the statistics, differences of those sums: float32 accuracy
    stats = collection_statistics(CollectionSums(*(t.cpu() for t in got)), n, rows - n)
    stats_want = collection_statistics(CollectionSums(*want), n, rows - n)
    stat_tol = 1e-13 if dtype == torch.float64 else 3e-7
    assert torch.allclose(stats, stats_want, rtol=0, atol=stat_tol), float((stats - stats_want).abs().max())
    assert len(poisoned_buffers) == 6  # the prepared copy and scratch, then the four partial sums


def test_kernel_order_does_not_matter():
    """The launcher sorts the kernels IMQ first; the caller's order comes back."""
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(DEVICE)
    labels = permutation_labels(20, 20, 9, seed=2).to(DEVICE)
    kernels, bandwidths = ("rbf", "imq", "rbf", "imq"), (0.5, 0.5, 3.0, 3.0)
    got = triton_agg.collection_sums(z, labels, kernels, bandwidths)
    flipped = triton_agg.collection_sums(z, labels, kernels[::-1], bandwidths[::-1])
    for a, b in zip(got, flipped, strict=True):
        assert torch.equal(a, b.flip(0))
    assert not torch.allclose(got[2][0], got[2][1])  # rbf and imq of one bandwidth differ


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_rows_give_nan_everywhere():
    z = torch.randn(20, 3, dtype=torch.float64)
    z[7, 2] = float("inf")
    labels = permutation_labels(10, 10, 4, seed=0)
    for t in triton_agg.collection_sums(z.to(DEVICE), labels.to(DEVICE), ("rbf", "imq"), (1.0, 2.0)):
        assert bool(t.isnan().all())


def test_argument_checks():
    z = torch.randn(10, 3, device=DEVICE)
    labels = permutation_labels(5, 5, 2, seed=0).to(DEVICE)
    with pytest.raises(ValueError, match="labels must be uint8"):
        triton_agg.collection_sums(z, labels[:, :1], ("imq",), (1.0,))
    with pytest.raises(ValueError, match="d <= 128"):
        triton_agg.collection_sums(torch.randn(10, 129, device=DEVICE), labels, ("imq",), (1.0,))
    with pytest.raises(ValueError, match="kernels must be in"):
        triton_agg.collection_sums(z, labels, ("gauss",), (1.0,))
    with pytest.raises(ValueError, match="as many of one"):
        triton_agg.collection_sums(z, labels, ("imq", "rbf"), (1.0,))
    with pytest.raises(ValueError, match="config.product"):
        triton_agg.collection_sums(z, labels, ("imq",), (1.0,),
                                   config=triton_agg.GPU_CONFIGS[torch.float32]._replace(product="fp8"))


def test_compiles_for_nvidia_gpus_without_one():
    """Ahead-of-time compile to sm_90 with triton's bundled ptxas: float32 (the bfloat16 split product on
    tensor cores) at d = 8 and 64 with one and two kernel chunks, and float64
    (python scripts/triton_aot.py --agg)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "triton_aot.py"), "--agg"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.endswith(" ok") for line in lines), result.stdout
    assert {line.split()[0] for line in lines} == {"fp32", "fp64"}
    assert any("product=bf16p3" in line for line in lines)
