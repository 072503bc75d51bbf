"""Shared helpers of the benchmark scripts: timing and a description of the machine."""

import datetime
import os
import platform
import statistics
import time


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorflow as tf

    return (f"{cpu}, {os.cpu_count()} cores, TF {tf.__version__}, "
            f"{datetime.date.today().isoformat()}")


def run_times(fn, reps=5, warmup=2):
    """Wall times of ``reps`` calls of ``fn()`` after ``warmup`` calls, in seconds (``fn`` must
    block until its result is ready). Needs no TensorFlow (the torchvision side uses it too)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_time(fn, reps=5, warmup=2):
    """Median wall time of ``fn()`` in seconds."""
    return statistics.median(run_times(fn, reps, warmup))


def interleaved_times(candidates, rounds):
    """{name: fn} -> {name: [seconds per round]}, timing every candidate once per round, in turn,
    so that a change in the machine's load touches all of them alike (candidates already warm)."""
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(candidates, rounds):
    """{name: fn} -> {name: median seconds} over ``interleaved_times``."""
    return {name: statistics.median(t) for name, t in interleaved_times(candidates, rounds).items()}


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
