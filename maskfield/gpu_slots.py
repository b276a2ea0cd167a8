"""One GPU per job on a multi-GPU machine: take free devices from a pool of file locks.

Snakemake's local executor counts a job's `gpu` resource but never says which device the job
gets, so every job would open device 0. `acquire(n)` takes `n` devices that no other maskfield
process holds (an exclusive `flock` on one file per device, kept until the process exits, so a
crashed or killed job frees its devices) and sets CUDA_VISIBLE_DEVICES to them. It must run
before anything initialises CUDA in the process: CUDA reads the variable once, at its start.

The pool is CUDA_VISIBLE_DEVICES when it is set (the devices the user allowed), else the GPUs
that `nvidia-smi -L` lists (read in a child process, so CUDA is not initialised here), else empty
(a CPU machine: nothing to do). Under Slurm (SLURM_JOB_ID set) the scheduler has already given
the job its devices, and the environment is left alone.

Environment: MASKFIELD_GPU_SLOTS=auto|off|on (on: pool even inside a Slurm job, for a local
Snakemake run inside one allocation), MASKFIELD_GPU_SLOTS_DIR=folder of the lock files (default
`.snakemake/gpu-slots` in the working directory; share one folder between workflows that run
at the same time on one machine).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from maskfield.errors import MaskfieldError

log = logging.getLogger("maskfield")

DEFAULT_DIR = Path(".snakemake") / "gpu-slots"
POLL_SECONDS = 0.5
"""How often a waiting job retries the locks (a slot frees when a job ends, minutes apart)."""
MODES = ("auto", "off", "on")
_GPU_LINE = re.compile(r"^GPU (\d+):")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)\s]+)\)")


@dataclass(frozen=True)
class SlotSettings:
    """How the pool behaves, read from the environment by `settings_from_env`."""

    mode: str = "auto"
    """auto: pool unless inside a Slurm job; off: never touch CUDA_VISIBLE_DEVICES; on: pool
    even inside a Slurm job (a local Snakemake run inside one multi-GPU allocation)"""
    folder: Path = DEFAULT_DIR
    """folder of the lock files, one per device; every job sharing the devices must use the same one"""


@dataclass
class Lease:
    """Devices this process holds, and the open lock files that hold them."""

    devices: list[str]
    files: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Give the devices back before the process exits (the CLI never needs to)."""
        for fd in self.files:
            os.close(fd)
        self.files.clear()


def settings_from_env(env: MutableMapping[str, str]) -> SlotSettings:
    """SlotSettings from MASKFIELD_GPU_SLOTS and MASKFIELD_GPU_SLOTS_DIR."""
    mode = env.get("MASKFIELD_GPU_SLOTS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise MaskfieldError(f"MASKFIELD_GPU_SLOTS is {mode!r}; set it to one of {', '.join(MODES)} (or unset it).")
    folder = env.get("MASKFIELD_GPU_SLOTS_DIR", "").strip()
    return SlotSettings(mode=mode, folder=Path(folder) if folder else DEFAULT_DIR)


def parse_visible_devices(value: str) -> list[str]:
    """Device ids of a CUDA_VISIBLE_DEVICES value, as CUDA reads it.

    Args:
        value: e.g. "0,1,2", "GPU-5a1c...,GPU-77e0...", "" (no device).
    Returns:
        The ids in order, up to the first empty or negative entry (CUDA ignores the rest).
    """
    ids = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        ids.append(item)
    return ids


def parse_nvidia_smi(text: str) -> list[str]:
    """Device ids from `nvidia-smi -L`: a GPU's index, or its MIG instances' UUIDs when partitioned.

    Args:
        text: the command's output, lines like "GPU 0: NVIDIA H200 (UUID: GPU-...)" and, under a
            MIG-partitioned GPU, "  MIG 1g.18gb Device 0: (UUID: MIG-...)".
    Returns:
        One id per device CUDA would see, each usable in CUDA_VISIBLE_DEVICES.
    """
    ids: list[str] = []
    gpus: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            gpus.append((m.group(1), []))
        elif (m := _MIG_LINE.match(line)) and gpus:
            gpus[-1][1].append(m.group(1))
    for index, migs in gpus:
        ids.extend(migs or [index])
    return ids


def machine_devices(env: MutableMapping[str, str]) -> tuple[list[str], str]:
    """The pool: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's GPUs, else none.

    Returns:
        (device ids, where they came from, for the log).
    """
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_visible_devices(env["CUDA_VISIBLE_DEVICES"]), "CUDA_VISIBLE_DEVICES"
    exe = shutil.which("nvidia-smi", path=env.get("PATH"))
    if exe is None:
        return [], "no CUDA_VISIBLE_DEVICES and no nvidia-smi"
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("GPU slots: nvidia-smi -L failed (%s); running without a device pool.", exc)
        return [], "nvidia-smi failed"
    if done.returncode != 0:
        # No driver to talk to: CUDA cannot start either, so the job runs on CPU and shares nothing.
        message = " ".join((done.stdout + done.stderr).split())
        log.warning("GPU slots: nvidia-smi -L exited %d (%s); running without a device pool.", done.returncode, message)
        return [], "nvidia-smi failed"
    return parse_nvidia_smi(done.stdout), "nvidia-smi -L"


def _lock_file(folder: Path, device: str) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding `path`'s exclusive lock, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise MaskfieldError(
            f"cannot open the GPU lock file {path} ({exc.strerror}); set MASKFIELD_GPU_SLOTS_DIR to a writable folder."
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise MaskfieldError(
            f"cannot lock {path} ({exc.strerror}); point MASKFIELD_GPU_SLOTS_DIR at a folder on a local disk, "
            f"e.g. /tmp/maskfield-gpu-slots."
        ) from exc
    return fd


def try_acquire(folder: Path, devices: list[str], n: int) -> Lease | None:
    """Lock `n` free devices of `devices` (lowest first), all or none.

    All or none, so that two jobs wanting two devices each never hold one apiece and wait forever.
    """
    lease = Lease(devices=[])
    for device in devices:
        fd = _try_lock(_lock_file(folder, device))
        if fd is not None:
            lease.devices.append(device)
            lease.files.append(fd)
            if len(lease.devices) == n:
                return lease
    lease.release()
    return None


def _wait_for(folder: Path, devices: list[str], n: int) -> Lease:
    """`try_acquire` until it succeeds, with a log line when it has to wait."""
    lease = try_acquire(folder, devices, n)
    if lease is not None:
        return lease
    start = time.monotonic()
    log.warning(
        "GPU slots: fewer than %d of the devices %s are free (locks in %s); waiting rather than sharing "
        "a device. More GPU jobs run at once than the pool has devices: is --resources gpu above %d, "
        "or does another workflow share the lock folder?",
        n, ",".join(devices), folder, len(devices),
    )
    while lease is None:
        time.sleep(POLL_SECONDS)
        lease = try_acquire(folder, devices, n)
    log.info("GPU slots: a device came free after %.1f s.", time.monotonic() - start)
    return lease


def acquire(n: int, env: MutableMapping[str, str] | None = None) -> Lease | None:
    """Take `n` free devices of this machine for this process and set CUDA_VISIBLE_DEVICES to them.

    Call it before anything initialises CUDA. Blocks while fewer than `n` devices are free.

    Args:
        n: GPUs the job was granted (Snakemake: `{resources.gpu}`); 0 takes none.
        env: the environment to read and change (default os.environ).
    Returns:
        The lease (held until the process exits or calls `release`), or None when nothing was pooled: n is 0,
        pooling is off, inside a Slurm job, or the machine has no device.
    """
    env = os.environ if env is None else env
    settings = settings_from_env(env)
    if n == 0 or settings.mode == "off":
        log.debug("GPU slots: not pooling (n=%d, MASKFIELD_GPU_SLOTS=%s).", n, settings.mode)
        return None
    if "SLURM_JOB_ID" in env and settings.mode == "auto":
        log.info("GPU slots: Slurm job %s; its devices (CUDA_VISIBLE_DEVICES=%s) are left as Slurm set them.",
                 env["SLURM_JOB_ID"], env.get("CUDA_VISIBLE_DEVICES", "unset"))
        return None
    devices, source = machine_devices(env)
    if not devices:
        log.info("GPU slots: no GPU on this machine (%s); nothing to pool.", source)
        return None
    if n > len(devices):
        raise MaskfieldError(
            f"this job asks for {n} GPUs but the pool has {len(devices)} (devices {','.join(devices)} from {source}); "
            f"give the rule at most {len(devices)} GPUs or make more devices visible."
        )
    try:
        settings.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaskfieldError(
            f"cannot create the GPU lock folder {settings.folder} ({exc.strerror}); "
            f"set MASKFIELD_GPU_SLOTS_DIR to a writable folder."
        ) from exc
    lease = _wait_for(settings.folder, devices, n)
    if source == "nvidia-smi -L":
        env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # so that index i is nvidia-smi's GPU i
    env["CUDA_VISIBLE_DEVICES"] = ",".join(lease.devices)
    log.info("GPU slots: this job runs on device %s of %s (from %s; CUDA_VISIBLE_DEVICES=%s, locks in %s).",
             ",".join(lease.devices), ",".join(devices), source, env["CUDA_VISIBLE_DEVICES"], settings.folder)
    return lease
