"""A GPU that does nothing: Triton's real front end (binding, specialisation, compilation for sm_90 with
its bundled ptxas, the launch call) over a driver whose launches are no-ops, with the tensors on the CPU.

    with null_gpu() as gpu:
        wae_fast.mmd(x, y, backend="triton")   # x, y CPU tensors
        gpu.launches                            # Triton launches made
        gpu.calls                               # the arguments each launch received

What it measures is the host's part of a call (Python, the Triton front end, the eager ATen ops on CPU
tensors of the same shapes); nothing runs on a device. Used by benchmarks/mmd_small_batch.py --host and
the tests of the direct launch.
"""
from __future__ import annotations

import contextlib

#: What the launcher sees of the device (an H100 SXM).
_PROPERTIES = {"max_shared_mem": 232448, "multiprocessor_count": 132, "max_num_regs": 65536, "warpSize": 32,
               "sm_clock_rate": 1980000, "mem_clock_rate": 2619000, "mem_bus_width": 5120,
               "max_threads_per_block": 1024}


class _Utils:
    def load_binary(self, name, kernel, shared, device):
        return 1, 1, 64, 0, 1024  # module, function, registers, spills, threads

    def unload_module(self, module):
        pass

    def get_device_properties(self, device):
        return dict(_PROPERTIES)


class _Recorder:
    def __init__(self):
        self.launches = 0
        self.calls = []
        self.keep = False


def _driver_class():
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class NullDriver(DriverBase):
        def __init__(self, recorder):
            self.utils = _Utils()
            self.recorder = recorder

            def launcher_cls(src, metadata):
                def launch(*args):
                    recorder.launches += 1
                    if recorder.keep:
                        recorder.calls.append(args)
                return launch

            self.launcher_cls = launcher_cls

        @staticmethod
        def is_active():
            return True

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self):
            return 0

        def set_current_device(self, device):
            pass

        def get_current_stream(self, device):
            return 0

        def get_device_capability(self, device=0):
            return 9, 0

        def get_active_torch_device(self):
            import torch
            return torch.device("cpu")

        def get_device_interface(self):
            import torch
            return torch.cuda

        def map_python_to_cpp_type(self, ty):
            return ty

        def get_benchmarker(self):
            raise RuntimeError("the null GPU has no benchmarker")

        def get_empty_cache_for_benchmark(self):
            raise RuntimeError("the null GPU has no cache")

        def clear_cache(self, cache):
            pass

    return NullDriver


@contextlib.contextmanager
def null_gpu(keep_calls: bool = False):
    """Run wae_fast's Triton backend on CPU tensors with the null driver (see the module docstring).
    TRITON_INTERPRET must be unset (the interpreter would run the kernels instead)."""
    import triton

    from wae_fast import _dispatch, _problem
    from wae_fast.backends import _triton_common, triton_mmd

    if _triton_common.interpreting():
        raise RuntimeError("null_gpu needs Triton's compiler: unset TRITON_INTERPRET before importing triton")
    recorder = _Recorder()
    recorder.keep = keep_calls
    saved = (_triton_common.is_available, triton_mmd._multiprocessors)
    _triton_common.is_available = lambda device=None: (True, "")
    triton_mmd._multiprocessors = lambda device: _PROPERTIES["multiprocessor_count"]
    _problem._OPTIONS.clear()
    _dispatch.engine.cache_clear()
    active = triton.runtime.driver._active
    triton.runtime.driver.set_active(_driver_class()(recorder))
    launchers = triton_mmd.LAUNCHERS
    compiled = [dict(launcher.compiled) for launcher in launchers]
    try:
        yield recorder
    finally:
        triton.runtime.driver._active = active
        _triton_common.is_available, triton_mmd._multiprocessors = saved
        _problem._OPTIONS.clear()
        for launcher, before in zip(launchers, compiled):  # kernels "loaded" on the null GPU stay there
            launcher.compiled = before
