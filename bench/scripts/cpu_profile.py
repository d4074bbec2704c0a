#!/usr/bin/env python3
"""Where the CPU goes at concurrency 1: a sampling profile of the durable
throughput bench (1,000 sagas of 5 echo steps on SQLite, one at a time),
set beside the bare commits of its floor, measured in the same process.

It runs `wasaga-bench --only throughput` at concurrency 1 under
`perf record` (cpu-clock samples, so it needs no hardware counters and works
on a virtual machine), then sorts every sample of two kinds of thread into
categories by its call stack:

- `wasaga-wasm`: the saga drivers. At concurrency 1 a saga's steps, their
  Wasm calls and their commits (in place, on the driver's thread) all run
  here; shown per saga and per commit (6 per saga: 1 to start, 1 per step).
- `sqlx-sqlite-wor`: the floor's connection, one single-row INSERT per
  commit; shown per commit.

    cargo build --release -p wasaga-bench
    python3 bench/scripts/cpu_profile.py [path/to/wasaga-bench]

Sampling slows the run (about 1.4x here), so read the per-commit figures as
proportions between the two columns, not as times. Rust frames have no
frame pointers, so a sample inside wasmtime or the runner may lack the
frames that name its caller: "runner and the rest" gathers those.
"""
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SAGAS = 1000
COMMITS_PER_SAGA = 6
FLOOR_COMMITS = SAGAS * 5
FREQUENCY = 20_000  # samples per second of CPU time: one per 50 µs

# First match wins: a sample inside a system call belongs to that call.
CATEGORIES = [
    ("fsync (kernel)", r"__x64_sys_fsync|__x64_sys_fdatasync"),
    ("WAL frame writes (pwrite)", r"__x64_sys_pwrite64"),
    ("SQLite file locks (fcntl)", r"__x64_sys_fcntl"),
    ("Wasm slot reset (PAGEMAP_SCAN ioctl)", r"__x64_sys_ioctl"),
    ("thread wake-ups and switches", r"__x64_sys_futex|__x64_sys_epoll_wait|finish_task_switch"),
    ("other kernel (faults, interrupts)", None),  # leaf in the kernel
    ("guest Wasm code", r"perf-\d+\.map"),
    ("SQLite statements (user space)", r"sqlite3|rusqlite|pcache1|pager[A-Z]|btree[A-Z]|wal[A-Z]"),
    ("wasmtime: instantiate, call, drop", r"wasmtime|cranelift"),
]
REST = "runner and the rest (serde, allocator, tokio)"


def classify(stack):
    for name, pattern in CATEGORIES:
        if pattern is None:
            if stack and "kernel.kallsyms" in stack[0]:
                return name
            continue
        if any(re.search(pattern, frame) for frame in stack):
            return name
    return REST


def samples(perf_data, comm):
    """Yields each sample's stack (innermost frame first) for threads named `comm`."""
    script = subprocess.run(
        ["perf", "script", "-i", perf_data, "--comms", comm],
        check=True, capture_output=True, text=True,
    ).stdout
    stack = None
    for line in script.splitlines():
        if "cpu-clock" in line and not line.startswith(("\t", " ")):
            stack = []
        elif stack is not None and line.strip():
            stack.append(line.strip())
        elif stack is not None:
            yield stack
            stack = None
    if stack:
        yield stack


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = sys.argv[1] if len(sys.argv) > 1 else f"{target}/release/wasaga-bench"
    if not Path(bench).exists():
        sys.exit(f"{bench} not found: cargo build --release -p wasaga-bench")
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/perf.data"
        run = subprocess.run(
            ["perf", "record", "-q", "-F", str(FREQUENCY), "-e", "cpu-clock", "-g", "-o", data,
             bench, "--only", "throughput", "--out", f"{tmp}/BENCHMARKS.md"],
            env={**os.environ, "WASAGA_BENCH_CONCURRENCY": "1"},
            check=True, capture_output=True, text=True,
        )
        for line in run.stdout.splitlines():
            if "concurrency 1 " in line:
                print("under perf:", " ".join(line.split()).replace("durable throughput ", ""))
        per_sample_us = 1e6 / FREQUENCY
        drivers = collections.Counter(classify(s) for s in samples(data, "wasaga-wasm"))
        floor = collections.Counter(classify(s) for s in samples(data, "sqlx-sqlite-wor"))

    print(f"\non-CPU µs (one sample = {per_sample_us:.0f} µs of CPU)")
    print(f"{'':48} {'saga driver':>12} {'per commit':>11} {'floor commit':>13}")
    print(f"{'':48} {'per saga':>12} {'(÷ 6)':>11} {'(sqlx)':>13}")
    for name in [name for name, _ in CATEGORIES] + [REST]:
        saga = drivers[name] * per_sample_us / SAGAS
        commit = floor[name] * per_sample_us / FLOOR_COMMITS
        print(f"{name:48} {saga:12.0f} {saga / COMMITS_PER_SAGA:11.0f} {commit:13.0f}")
    saga = sum(drivers.values()) * per_sample_us / SAGAS
    commit = sum(floor.values()) * per_sample_us / FLOOR_COMMITS
    print(f"{'total':48} {saga:12.0f} {saga / COMMITS_PER_SAGA:11.0f} {commit:13.0f}")


if __name__ == "__main__":
    main()
