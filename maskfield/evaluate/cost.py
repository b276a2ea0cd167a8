"""What a piece of work costs: the peak memory it adds, on the GPU or in the process's RAM.

On CUDA: torch's peak allocated bytes above the allocation at entry. On a CPU (Linux): the
process's resident-set high-water mark (VmHWM, reset at entry through /proc/self/clear_refs)
above the resident size at entry, less what the file-backed part of the resident set grew by
meanwhile. Two corrections keep that to the block's own allocations:
- glibc keeps freed heap memory resident and reuses it, which would hide the block's allocations
  behind memory that earlier work freed (a second measurement's behind the first's), and it keeps
  what the block frees, so that the high-water mark counts the heap's growth rather than what
  was live at once (a Gaussians per-pixel training read 1072 MiB that way, 184 MiB without). At
  entry `PeakMemory` therefore hands glibc's free pages back to the system (`malloc_trim(0)`) and
  from then on has every allocation of 128 KiB or more served by mmap (returned when freed),
  undoing `maskfield.heap.keep_freed_memory` (which `maskfield.cli.KEEP_HEAP_COMMANDS` call);
- the resident set also counts the pages of mapped files, such as a shared library's code the
  first time the block runs it (in the efficiency job ~20 MiB of file-backed pages appear during
  the first method's training, none during the second's): not memory the work allocates, so
  their growth (RssFile + RssShmem, exit minus entry) is subtracted. A file mapped and unmapped
  again inside the block still counts.

The mmap setting stays for the rest of the process and slows work down (a mask field's
training 2.3x): **time nothing inside a `PeakMemory` block or after one in the same process.**
Measure the time first, then the memory in a shorter repeat (`maskfield efficiency` and
scripts/bench_perpixel.py do so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from maskfield.heap import heap_for_measuring

log = logging.getLogger("maskfield")
_PROC = Path("/proc/self")


def _status_kib(key: str) -> int | None:
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _file_backed_kib() -> int:
    """Resident pages of mapped files and shared memory (0 where the kernel does not split VmRSS)."""
    return (_status_kib("RssFile") or 0) + (_status_kib("RssShmem") or 0)


def _reset_high_water_mark() -> bool:
    try:
        (_PROC / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager: the peak memory (MiB) the block adds above what was live at entry (`mib`).

    `mib` is NaN (and a warning logged) where the platform offers no measurement: a CPU run
    outside Linux/glibc.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.mib = float("nan")
        self._base = 0
        self._file_base = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif heap_for_measuring() and _reset_high_water_mark():
            self._base = _status_kib("VmRSS") or 0
            self._file_base = _file_backed_kib()
        else:
            self._base = -1
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base >= 0 and (peak := _status_kib("VmHWM")) is not None:
            mapped_files = max(_file_backed_kib() - self._file_base, 0)
            self.mib = max(peak - self._base - mapped_files, 0) / 1024
        else:
            log.warning("peak memory is not measurable on this platform (no /proc/self or glibc); recorded as NaN")
