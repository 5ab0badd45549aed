"""What bench/run.py, bench/floor.py and bench/cells_vs_torch.py share: timing functions that
take turns, and rewriting one marked section of bench/results.md."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def interleaved_times(fns: list, repeats: int, warmup: int = 3, blocks: int = 5) -> list[list[list[float]]]:
    """Wall times, times[i][b] for function i in block b. The functions take turns in blocks,
    so drift in the machine's load hits all alike, while within a block one runs alone (a
    server still finishing its last request does not slow the in-process reference down)."""
    for _ in range(warmup):
        for f in fns:
            f()
    times = [[[] for _ in range(blocks)] for _ in fns]
    per_block = max(1, repeats // blocks)
    for b in range(blocks):
        for i, f in enumerate(fns):
            for _ in range(per_block):
                t0 = time.perf_counter()
                f()
                times[i][b].append(time.perf_counter() - t0)
    return times


def interleaved_medians(fns: list, repeats: int, warmup: int = 3, blocks: int = 5) -> list[float]:
    """Median wall time of each function, timed by interleaved_times."""
    return [float(np.median(sum(t, []))) for t in interleaved_times(fns, repeats, warmup, blocks)]


def replace_section(path: Path, begin: str, end: str, body: str) -> None:
    """`body` (which starts with `begin` and ends with `end`) in place of the file's section
    between those markers, or appended; the rest of the file as it was."""
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)
