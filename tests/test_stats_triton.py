"""The Triton kernel of the permutation test (wae_fast/backends/triton_perm.py).

On a CUDA device when there is one, else through Triton's interpreter: every product precision against a
float64 dense oracle (K₀ from direct differences, then the labellings' sums by a literal product), odd
sizes over several row blocks, column tiles and labelling blocks; output buffers poisoned first; its
argument checks. And, without a GPU, the kernel compiled ahead of time to sm_90 machine code with
triton's bundled ptxas (the compiled path's lowering, which the interpreter does not exercise: the
bfloat16 tensor-core dots of the split kernel tile).

Without a usable Triton backend the module is skipped with the reason, unless CI requires it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import required_backends
from wae_fast.backends import triton_perm
from wae_fast.stats import labelling_statistics, permutation_labels, unpack_labels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_OK, _REASON = triton_perm.is_available(torch.device(DEVICE))

pytestmark = pytest.mark.skipif(not _OK and "triton" not in required_backends(),
                                reason=f"Triton backend unavailable: {_REASON}")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _oracle(z, labels, kernel, bandwidths):
    zd = z.double().cpu()
    r = ((zd[:, None, :] - zd[None, :, :]) ** 2).sum(-1)
    k = sum(b / (b + r) for b in bandwidths) if kernel == "imq" else sum(torch.exp(-r / b) for b in bandwidths)
    k.fill_diagonal_(0.0)
    u = unpack_labels(labels, z.shape[0]).double()
    return torch.einsum("pi,ij,pj->p", u, k, u), torch.einsum("pi,ij->p", u, k), k.sum()


@pytest.mark.parametrize("dtype, product", [(torch.float32, "bf16p3"), (torch.float32, "tf32x3"),
                                            (torch.float32, "ieee"), (torch.float64, "ieee")])
@pytest.mark.parametrize("rows, d, kernel, count", [(7, 1, "imq", 3), (203, 5, "rbf", 150)])
def test_sums_match_the_oracle(dtype, product, rows, d, kernel, count, poisoned_buffers):
    g = torch.Generator().manual_seed(rows)
    z = (torch.randn(rows, d, generator=g, dtype=torch.float64) + 20.0).to(dtype)
    labels = permutation_labels(rows // 3, rows - rows // 3, count - 1, seed=4)
    bandwidths = (2.0 * d, 0.5 * d)
    config = triton_perm.GPU_CONFIGS[dtype]._replace(product=product)
    got = triton_perm.permutation_sums(z.to(DEVICE), labels.to(DEVICE), kernel, bandwidths, config=config)
    want = _oracle(z, labels, kernel, bandwidths)
    tol = (1e-11 if dtype == torch.float64 else 3e-6) * float(want[2])  # relative to the total
    for name, g_, w in zip(("within", "member_rows", "total"), got, want):
        assert g_.dtype == torch.float64
        assert torch.allclose(g_.cpu(), w, rtol=0, atol=tol), (name, float((g_.cpu() - w).abs().max()))
    # the statistics, differences of those sums: float32 accuracy (a bfloat16 split into two parts
    # instead of three is 400 times further off)
    n = rows // 3
    stats = labelling_statistics(*(t.cpu() for t in got), n, rows - n)
    stats_want = labelling_statistics(*want, n, rows - n)
    stat_tol = (1e-13 if dtype == torch.float64 else 2e-7) * len(bandwidths)
    assert torch.allclose(stats, stats_want, rtol=0, atol=stat_tol), float((stats - stats_want).abs().max())
    assert len(poisoned_buffers) == 5  # the centred copy, its scratch, the three partial sums


def test_argument_checks():
    z = torch.randn(10, 3, device=DEVICE)
    labels = permutation_labels(5, 5, 2, seed=0).to(DEVICE)
    with pytest.raises(ValueError, match="labels must be uint8"):
        triton_perm.permutation_sums(z, labels[:, :1], "imq", (1.0,))
    with pytest.raises(ValueError, match="d <= 128"):
        triton_perm.permutation_sums(torch.randn(10, 129, device=DEVICE), labels, "imq", (1.0,))
    with pytest.raises(ValueError, match="config.product"):
        triton_perm.permutation_sums(z, labels, "imq", (1.0,),
                                     config=triton_perm.GPU_CONFIGS[torch.float32]._replace(product="fp8"))


def test_compiles_for_nvidia_gpus_without_one():
    """Ahead-of-time compile to sm_90 with triton's bundled ptxas: float32 (the bfloat16 split product on
    tensor cores) and float64, both kernels, d = 8 and 64 (python scripts/triton_aot.py --perm)."""
    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="1",
               PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", "triton_aot.py"), "--perm"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 4 and all(line.endswith(" ok") for line in lines), result.stdout
    assert {line.split()[0] for line in lines} == {"fp32", "fp64"}
    assert any("product=bf16p3" in line for line in lines)
