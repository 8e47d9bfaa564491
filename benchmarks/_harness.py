"""What the benchmarks share: worker processes and their result lines, and what a row records about the
process and the machine (resident memory, the address-space cap, load, free memory, the git commit).

A benchmark runs its cases in worker processes, so that a case that runs out of memory or hangs is a row
and the run goes on. The parent side:

    worker = Worker([sys.executable, script, "--worker", payload], env)  # its own session
    event = worker.next_event(timeout)  # the next result line of its stdout as a dict; None once it exited
    worker.kill()                       # SIGKILL to the worker and whatever it started (a compiler)
    worker.exit_reason()                # "worker exited with code 1: <its stderr>", "worker killed by ..."

or ``run_workers([argv, ...], env, timeout)`` for workers that each run to the end (one case, or the ranks
of one process group). The worker side writes each result with ``emit(event)``; everything else it prints
is ignored (the last lines of its stderr are kept for the error row).

Nothing here imports torch: the parent of a benchmark does not need it.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
MARK = "@@wae_fast_bench@@ "
GIB = 2 ** 30


# ---------------------------------------------------------------------------------------------------
# worker processes
# ---------------------------------------------------------------------------------------------------

def emit(event: dict) -> None:
    """Write one result line (the worker side)."""
    sys.stdout.write(MARK + json.dumps(event) + "\n")
    sys.stdout.flush()


def _pump(stream, sink) -> None:
    for line in stream:
        sink(line)
    sink(None)


class Worker:
    """A worker process in its own session: its result lines as a queue of events, the tail of its stderr."""

    def __init__(self, argv: list[str], env: dict | None = None, stderr_lines: int = 8):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     start_new_session=True)
        self.events: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=stderr_lines)
        self._readers = [threading.Thread(target=_pump, args=(self.proc.stdout, self._read_stdout), daemon=True),
                         threading.Thread(target=_pump, args=(self.proc.stderr, self._read_stderr), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, line) -> None:
        if line is None:
            self.events.put(None)
        elif line.startswith(MARK):
            self.events.put(json.loads(line[len(MARK):]))

    def _read_stderr(self, line) -> None:
        if line is not None and line.strip():
            self.stderr_tail.append(line.rstrip())

    def next_event(self, timeout: float | None = None) -> dict | None:
        """The next result line; None when the worker's stdout closed (it exited). Raises TimeoutError when
        nothing came within `timeout` seconds."""
        try:
            return self.events.get(timeout=None if timeout is None else max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"no result line within {timeout:g} s") from None

    def kill(self) -> None:
        """SIGKILL the worker's process group (the worker and what it started)."""
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status (negative: the signal), once the worker and the readers of its output are done."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        if not any(reader.is_alive() for reader in self._readers):
            self.proc.stdout.close()
            self.proc.stderr.close()
        return code

    def exit_reason(self, during: str | None = None) -> str:
        """How the worker ended, for an error row: its exit code or signal, what it was doing (`during`),
        and the last lines of its stderr."""
        code = self.wait()
        if code < 0:
            sig = signal.Signals(-code).name
            why = f"worker killed by {sig}" + (" (likely the kernel's OOM killer)" if sig == "SIGKILL" else "")
        else:
            why = f"worker exited with code {code}"
        if during:
            why += f" during the {during}"
        tail = " | ".join(list(self.stderr_tail)[-3:])
        return f"{why}: {tail}" if tail else why


class Finished(NamedTuple):
    events: list[dict]  # every result line, in order
    returncode: int | None  # None when it was killed at the deadline
    detail: str  # "" for a clean exit (code 0), else the exit reason or the timeout


def run_workers(argvs: list[list[str]], env: dict | None, timeout: float) -> list[Finished]:
    """Start every worker at once and wait until all have exited, or until `timeout` seconds passed: then
    every worker is killed and each Finished says so. Returns what each one wrote."""
    workers = [Worker(argv, env) for argv in argvs]
    deadline = time.monotonic() + timeout
    events: list[list[dict]] = [[] for _ in workers]
    codes: list[int | None] = [None] * len(workers)
    try:
        for index, worker in enumerate(workers):
            while (event := worker.next_event(deadline - time.monotonic())) is not None:
                events[index].append(event)
            codes[index] = worker.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
    except (TimeoutError, subprocess.TimeoutExpired):
        codes = [None] * len(workers)
    finally:  # also on an error here or Ctrl-C: no orphan worker, nor anything a worker started
        for worker in workers:
            worker.kill()
    finished = []
    for worker, seen, code in zip(workers, events, codes):
        worker.wait()
        if code is None:
            finished.append(Finished(seen, None, f"killed after {timeout:g} s"))
        else:
            finished.append(Finished(seen, code, "" if code == 0 else worker.exit_reason()))
    return finished


def checkout_env(**variables: str) -> dict:
    """The environment for a worker that imports wae_fast from this checkout (PYTHONPATH first), plus
    `variables`."""
    env = dict(os.environ, **variables)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                            if p])
    return env


# ---------------------------------------------------------------------------------------------------
# the process: resident memory, address-space cap, errors
# ---------------------------------------------------------------------------------------------------

def status_kb(key: str) -> int | None:
    """A field of /proc/self/status in kB (VmRSS, VmHWM: the peak resident set, VmSize), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    kb = status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float | None:
    kb = status_kb("VmHWM")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM (the peak resident set) to the current resident set (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class AddressSpaceCap:
    """RLIMIT_AS at (the current address space) + limit_gb while the block runs, then restored: an
    allocation past it fails (MemoryError, or torch's RuntimeError) instead of swapping."""

    def __init__(self, limit_gb: float | None):
        self.limit_gb = limit_gb
        self.saved = None

    def __enter__(self):
        import resource

        if self.limit_gb is not None and self.limit_gb > 0:
            self.saved = resource.getrlimit(resource.RLIMIT_AS)
            _, hard = self.saved
            soft = (status_kb("VmSize") or 0) * 1024 + int(self.limit_gb * GIB)
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        return self

    def __exit__(self, *exc):
        import resource

        if self.saved is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.saved)
        return False


def is_oom(exc: BaseException) -> bool:
    """Whether an exception is a failed allocation (host or CUDA)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("out of memory", "can't allocate memory", "cannot allocate memory",
                                   "bad_alloc", "failed to allocate"))


def describe(exc: BaseException) -> str:
    """The exception's type and the first line of its message (at most 300 characters)."""
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# the machine and the checkout
# ---------------------------------------------------------------------------------------------------

def loadavg_1m() -> float | None:
    """The 1-minute load average (a loaded machine's times are noisy), or None."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def mem_available_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return None


def git_info(root: Path = REPO_ROOT) -> dict:
    """{"git_commit": the checkout's commit or None, "git_dirty": whether the library's sources differ from
    it (wae_fast/, csrc/, setup.py), None without a commit}."""
    def git(*cmd):
        try:
            return subprocess.run(["git", "-C", str(root), *cmd], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = git("rev-parse", "--short=12", "HEAD") or None
    dirty = bool(git("status", "--porcelain", "--", "wae_fast", "csrc", "setup.py")) if commit else None
    return {"git_commit": commit, "git_dirty": dirty}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
