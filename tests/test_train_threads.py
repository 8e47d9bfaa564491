"""--threads changes only the rounding: runs at 1 and 2 threads give the same held-out metrics and weights.

They agree to rounding, not bit for bit: torch's CPU kernels (convolution weight gradients, sums) split
their reductions by thread count. A parameter whose exact gradient is 0 (the bias of a layer feeding a
batch-norm) would turn that rounding noise into ±lr Adam steps and the runs would differ by percents.
"""
import pytest
import torch

from helpers import tiny_config
from wae_fast.train.data import synthetic_dataset
from wae_fast.train.trainer import Trainer

QUIET = dict(log=lambda *a: None, progress=False, plots=False, final_eval=False)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model", ["wae-mmd", "vae"])
def test_runs_with_different_threads_agree(model, tmp_path, restore_threads):
    runs = []
    for threads in (1, 2):
        trainer = Trainer(tiny_config(model, tmp_path, threads=threads), tmp_path / f"threads{threads}",
                          synthetic_dataset(40, 20), **QUIET)
        trainer.fit()
        assert torch.get_num_threads() == threads
        runs.append(trainer)
    one, two = runs
    held_out = [k for k in one.history[-1] if k.startswith("test_")]
    assert {"test_recon", "test_mmd"} <= set(held_out)
    for key in held_out:
        assert two.history[-1][key] == pytest.approx(one.history[-1][key], rel=1e-5, abs=1e-7), key
    for name, module in one.modules().items():
        for (key, a), b in zip(module.state_dict().items(), two.modules()[name].state_dict().values()):
            if a.dtype.is_floating_point:
                error = float((a - b).abs().max())
                assert error <= 1e-4 * float(a.abs().max()) + 1e-8, f"{name}.{key}: differs by {error:.3g}"
