"""The timing and table helpers of bench/run.py and its row modules: a subprocess timed from spawn to exit, the
check that it did what it is measured for, medians and the rows of the results table."""

from __future__ import annotations

import os
import resource
import select
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# -- running and timing a subprocess ---------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False
    cpu: float = 0.0  # user + system CPU seconds of the process


def run_once(cmd: list[str], *, env: dict[str, str], cwd: Path | None = None, timeout: float | None = None) -> Sample:
    """Spawn `cmd` and time it to its exit (pidfd + poll: no polling latency; a timeout kills it through the pidfd,
    which cannot hit a recycled pid). Peak memory is measured apart, by `peak_rss` (see bench/rss.py for why)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd)
        pidfd = os.pidfd_open(proc.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            ready = poller.poll(None if timeout is None else int(timeout * 1000))
            elapsed = time.perf_counter() - started
            if not ready:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            os.close(pidfd)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        return Sample(
            seconds=elapsed,
            rc=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            timed_out=not ready,
            cpu=usage.ru_utime + usage.ru_stime,
        )


def own_cpu() -> float:
    """CPU seconds of this process so far: the benchmark waits on its children, so it is the sandbox serving."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class BenchError(Exception):
    """A run did not do what it is supposed to measure (a product problem or a harness problem)."""


def checked(sample: Sample, what: str, check: Callable[[Sample], str | None] | None = None) -> Sample:
    problem = None
    if sample.timed_out:
        problem = f"timed out after {sample.seconds:.0f} s"
    elif sample.rc != 0:
        problem = f"exit code {sample.rc}"
    elif check is not None:
        problem = check(sample)
    if problem:
        tail = "\n".join((sample.stderr.strip() or sample.stdout.strip()).splitlines()[-8:])
        raise BenchError(f"{what}: {problem}\n{tail}")
    return sample


def median(samples: list[Sample]) -> float:
    return statistics.median(s.seconds for s in samples)


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def log(message: str) -> None:
    print(message, flush=True)


def show_times(label: str, samples: list[Sample]) -> None:
    log(f"  {label}: " + ", ".join(f"{s.seconds:.3f}" for s in samples) + f" s -> median {fmt_s(median(samples))}")


# -- rows ------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    ours: str = "—"
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "INFO"
    notes: list[str] = field(default_factory=list)


def ratio_row(name: str, ours: float, base: float, limit: float, baseline_label: str) -> Row:
    value = ours / base
    return Row(name, fmt_s(ours), f"{fmt_s(base)} ({baseline_label})", f"{value:.2f}x", f"<= {limit:g}x",
               "PASS" if value <= limit else "FAIL")


def error_row(name: str, target: str, exc: Exception) -> Row:
    first = str(exc).splitlines()[0]
    return Row(name, target=target, verdict="ERROR", notes=[first, *str(exc).splitlines()[1:]])


# -- bytecode ---------------------------------------------------------------------------------------------------


def cached_bytecode(python: str, env: dict[str, str]) -> str | None:
    """Compile the package's bytecode once, beside its sources (`__pycache__`, ignored by git), when this
    environment forbids writing it (PYTHONDONTWRITEBYTECODE): every timed run would otherwise compile each module
    it imports from source, a cost an installed CLI pays once, not on every run (the standard library's and the
    dependencies' bytecode is there already). None when nothing was needed."""
    if not env.get("PYTHONDONTWRITEBYTECODE"):
        return None
    compile_package = "import compileall, os, reconciler; compileall.compile_dir(os.path.dirname(reconciler.__file__), quiet=1)"
    subprocess.run([python, "-c", compile_package], env=env, check=True)
    return ("PYTHONDONTWRITEBYTECODE is set here, so the package's bytecode was compiled once beside its sources "
            "before the timed runs, as an installed CLI has it")
