"""The heap settings of `maskfield.heap`: large temporaries reused by the commands, and memory
still measurable after them. Each case runs in a fresh Python process (the settings last for a
process's life)."""

import subprocess
import sys

import pytest

from maskfield.heap import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")

# Minor page faults of 8 rounds of a training step's pattern: a 3DGS per-pixel gradient of
# [20000, 512] float32 (40 MiB, over glibc's largest mmap threshold) and two [4096, 512]
# temporaries, made and freed. Measured after 30 warm-up rounds: glibc's aligned allocations ask
# a little more than the block they freed, so the kept heap settles into reuse over a few steps.
FAULTS_OF_A_LOOP = """
import resource, sys
import torch
SETUP
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    grad = torch.zeros(20000, 512)
    x = torch.ones(4096, 512)
    grad[:4096] += x * 2
    del grad, x
for _ in range(30):
    step()
start = faults()
for _ in range(8):
    step()
print(faults() - start)
"""

PAGES_PER_ROUND = 20000 * 512 * 4 // 4096


def loop_faults(setup: str) -> int:
    done = subprocess.run([sys.executable, "-c", FAULTS_OF_A_LOOP.replace("SETUP", setup)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def test_keep_freed_memory_stops_a_loop_from_page_faulting_its_temporaries_in_again():
    if not keep_freed_memory():
        pytest.skip("not glibc")
    default = loop_faults("")
    kept = loop_faults("from maskfield.heap import keep_freed_memory; keep_freed_memory()")
    assert default >= 6 * PAGES_PER_ROUND, default  # every round faults its gradient in afresh
    assert kept <= PAGES_PER_ROUND // 10, kept


def cli_then_loop_faults(command: str) -> int:
    """The loop's faults after the CLI's entry point ran `maskfield <command> --help`."""
    return loop_faults(f"from maskfield.cli import main\ntry:\n    main(['{command}', '--help'])\nexcept SystemExit:\n    pass")


def test_the_per_pixel_training_keeps_freed_memory_and_other_commands_do_not():
    """The per-pixel training reuses its step's temporaries; the RGB field (and every other
    command) returns large blocks to the system as glibc does by default (kept, its peak memory
    grew at Replica's size for no gain in time)."""
    if not keep_freed_memory():
        pytest.skip("not glibc")
    assert cli_then_loop_faults("train-perpixel") <= PAGES_PER_ROUND // 10
    assert cli_then_loop_faults("train-rgb") >= 6 * PAGES_PER_ROUND


PEAK_AFTER_KEEPING = """
import torch
from maskfield.heap import keep_freed_memory
from maskfield.evaluate.cost import PeakMemory
keep_freed_memory()
x = torch.ones(16 * 2**20)  # 64 MiB, then freed into the kept heap
del x
with PeakMemory("cpu") as peak:
    y = torch.ones(16 * 2**20)
print(peak.mib)
"""


def test_peak_memory_counts_a_block_after_the_heap_was_kept():
    """`PeakMemory` undoes `keep_freed_memory`: 64 MiB allocated again inside the block, where
    the kept heap would have served it from pages already resident, still read as 64 MiB."""
    done = subprocess.run([sys.executable, "-c", PEAK_AFTER_KEEPING], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 60 <= float(done.stdout.split()[-1]) <= 72, done.stdout
