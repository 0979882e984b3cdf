"""What a measurement ran on: heads every report page and every benchmark's machine info."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator, Sequence, TypeVar

import torch


def environment() -> dict[str, str]:
    import timm
    import torchvision

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})",
        "cpu_model": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
    }


def cpu_model() -> str:
    """The host CPU's model name as the kernel reports it (Linux ``/proc/cpuinfo``), else the platform's;
    "unknown" where neither says (a virtual machine may report only a family name)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or "unknown"


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (None: unchanged), then restore the setting.

    On a machine whose cores are busy with other work, several threads per operation wait on each
    other at every barrier and small convolutions run many times slower (measured here: a batch-1
    ResNet-18 forward took 47 ms on one thread and 960 ms on two); one thread is immune to that."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Run the block so that repeating it gives the same bits: one intra-op CPU thread and
    deterministic cuDNN algorithms, settings restored after.

    Multi-threaded CPU convolution backward is not run-to-run deterministic in this torch build
    (measured: two identical train-mode backward passes of timm's EfficientNet-B4 at 380 px on two
    threads disagree in 263 of its gradients; on one thread in none). A bit-identity claim about
    gradients is only reproducible under this context."""
    benchmark, deterministic = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        with cpu_threads(1):
            yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic


T = TypeVar("T")
R = TypeVar("R")


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def in_processes(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for every item, in order of completion, computed by ``workers``
    processes that share this process's intra-op threads between them.

    For work that runs on one core whatever the thread setting (building networks, Python-level
    loops, one-thread training runs): on two cores two processes take half the time. With
    ``workers <= 1`` everything runs here, in order. Workers are spawned, not forked (a forked
    torch can hang in its thread pool), so ``fn`` must be importable at module level, and a
    script that calls this must guard its entry point with ``if __name__ == "__main__"``.
    An exception in ``fn`` is raised here."""
    workers = min(workers, len(items))
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    per_worker = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_threads, initargs=(per_worker,)) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future.result()


def declared_floor(dependency: str, distribution: str = "cnn-repro") -> str | None:
    """The lowest version of ``dependency`` this project declares (its ``>=`` in pyproject.toml, as
    installed), or None where the project is not installed or declares no floor. ``tox -e lowest``
    runs the suite at exactly these floors (constraints/lowest.txt)."""
    try:
        requirements = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        found = re.fullmatch(rf"{re.escape(dependency)}\s*>=\s*([0-9][\w.]*)", requirement.split(";")[0].strip())
        if found:
            return found.group(1)
    return None
