"""GPU slots: concurrent `maskfield --gpus N` jobs on one machine get different devices.

No GPU is needed: the pool comes from CUDA_VISIBLE_DEVICES or a fake `nvidia-smi` on PATH, and
the jobs are real `maskfield` processes running a test command (`hold`) that reports the
CUDA_VISIBLE_DEVICES it saw and then waits for a release file, so the test decides when each
job ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maskfield import gpu_slots
from maskfield.errors import MaskfieldError

# A maskfield process with one extra command. `register` runs where a stage module would be
# imported, so what it sees is what a stage's imports (tinycudann initialising CUDA) would see.
HOLDER = r"""
import json, os, sys, time
from pathlib import Path
from maskfield import cli

AT_IMPORT = {}

def register(sub, name):
    AT_IMPORT["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    p = sub.add_parser(name)
    p.add_argument("--report", required=True)
    p.add_argument("--release", required=True)
    p.set_defaults(func=hold)

def hold(args):
    seen = {"at_import": AT_IMPORT["cuda_visible_devices"], "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER")}
    Path(args.report + ".tmp").write_text(json.dumps(seen))
    os.replace(args.report + ".tmp", args.report)
    deadline = time.monotonic() + 60
    while not Path(args.release).exists() and time.monotonic() < deadline:
        time.sleep(0.02)

cli.COMMANDS["hold"] = "__main__:register"
sys.exit(cli.main(sys.argv[1:]))
"""

TWO_GPUS = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1b7e0c52-0000-0000-0000-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-9d41f3aa-0000-0000-0000-000000000000)
"""


class Job:
    """One `maskfield [--gpus N] hold` process."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str], gpus: int | None = 1):
        self.report_path, self.release_path = tmp / f"{name}.json", tmp / f"{name}.release"
        self.log_path = tmp / f"{name}.log"
        flags = [] if gpus is None else ["--gpus", str(gpus)]
        cmd = [sys.executable, "-c", HOLDER, *flags, "hold", "--report", str(self.report_path), "--release", str(self.release_path)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)

    def report(self, timeout: float = 20.0) -> dict:
        """What the job saw, once it runs its command."""
        deadline = time.monotonic() + timeout
        while not self.report_path.exists():
            assert self.proc.poll() is None, f"job exited {self.proc.returncode}: {self.log_path.read_text()}"
            assert time.monotonic() < deadline, f"job did not start its command: {self.log_path.read_text()}"
            time.sleep(0.02)
        return json.loads(self.report_path.read_text())

    def device(self) -> str:
        return self.report()["cuda_visible_devices"]

    def finish(self) -> int:
        self.release_path.touch()
        return self.proc.wait(timeout=20)

    def log_mentions(self, text: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return True


@pytest.fixture
def job_env(tmp_path):
    """Environment of a job on a machine with no GPU knowledge yet (no CUDA_VISIBLE_DEVICES, no
    nvidia-smi, not in Slurm), with its lock folder in tmp_path; tests add the devices."""
    (tmp_path / "bin").mkdir()
    drop = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "SLURM_JOB_ID", "MASKFIELD_GPU_SLOTS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PATH=str(tmp_path / "bin"), MASKFIELD_GPU_SLOTS_DIR=str(tmp_path / "locks"))
    return env


@pytest.fixture
def jobs(tmp_path):
    """`jobs(name, env, gpus=1)` starts a Job; every job still running at the end is killed."""
    started: list[Job] = []

    def start(name: str, env: dict[str, str], gpus: int | None = 1) -> Job:
        started.append(Job(tmp_path, name, env, gpus))
        return started[-1]

    yield start
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def test_four_jobs_get_four_devices_and_a_fifth_waits_for_one_to_finish(job_env, jobs):
    env = dict(job_env, CUDA_VISIBLE_DEVICES="0,1,2,3")
    four = [jobs(f"job{i}", env) for i in range(4)]
    seen = [job.report() for job in four]
    assert sorted(s["cuda_visible_devices"] for s in seen) == ["0", "1", "2", "3"]
    assert all(s["at_import"] == s["cuda_visible_devices"] for s in seen)  # set before the command's imports
    fifth = jobs("job4", env)
    assert fifth.log_mentions("waiting rather than sharing a device")
    assert not fifth.report_path.exists()
    freed = four[2].device()
    assert four[2].finish() == 0
    assert fifth.device() == freed
    assert fifth.log_mentions(f"runs on device {freed} of 0,1,2,3")
    assert [job.finish() for job in (*four[:2], four[3], fifth)] == [0, 0, 0, 0]


def test_two_jobs_split_the_gpus_nvidia_smi_lists(job_env, jobs, tmp_path):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '%s' '{TWO_GPUS}'\n")  # printf: a shell builtin, PATH has only bin/
    smi.chmod(0o755)
    a, b = jobs("a", job_env), jobs("b", job_env)
    assert sorted([a.device(), b.device()]) == ["0", "1"]
    # nvidia-smi numbers GPUs by PCI bus; CUDA numbers them the same way only when told to.
    assert a.report()["cuda_device_order"] == b.report()["cuda_device_order"] == "PCI_BUS_ID"
    assert a.finish() == b.finish() == 0


def test_a_killed_job_frees_its_device(job_env, jobs):
    env = dict(job_env, CUDA_VISIBLE_DEVICES="6")
    first = jobs("first", env)
    assert first.device() == "6"
    second = jobs("second", env)
    assert second.log_mentions("waiting rather than sharing a device")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert second.device() == "6"
    assert second.finish() == 0


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"SLURM_JOB_ID": "4242", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "0,1,2,3"),  # Slurm chose the devices
        ({"MASKFIELD_GPU_SLOTS": "off", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, "0,1,2,3"),
        ({}, None),  # CPU machine: no CUDA_VISIBLE_DEVICES, no nvidia-smi
    ],
    ids=["slurm", "switched-off", "no-devices"],
)
def test_environment_is_left_alone(job_env, jobs, tmp_path, extra, expected):
    job = jobs("job", dict(job_env, **extra))
    assert job.report()["cuda_visible_devices"] == expected
    assert job.report()["cuda_device_order"] is None
    assert job.finish() == 0
    assert not (tmp_path / "locks").exists()


def test_more_gpus_than_the_machine_has_is_an_error(job_env, jobs):
    job = jobs("greedy", dict(job_env, CUDA_VISIBLE_DEVICES="0,1"), gpus=3)
    assert job.proc.wait(timeout=20) == 2
    log = job.log_path.read_text()
    assert "asks for 3 GPUs but the pool has 2" in log and "Traceback" not in log


def test_without_gpus_flag_nothing_is_pooled(job_env, jobs, tmp_path):
    job = jobs("plain", dict(job_env, CUDA_VISIBLE_DEVICES="0,1"), gpus=None)
    assert job.device() == "0,1"
    assert job.finish() == 0
    assert not (tmp_path / "locks").exists()


def test_multi_gpu_job_takes_free_devices_all_or_none(tmp_path):
    folder = tmp_path / "locks"
    folder.mkdir()
    held = gpu_slots.try_acquire(folder, ["1"], 1)  # another job holds device 1
    assert held is not None and held.devices == ["1"]
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2", "MASKFIELD_GPU_SLOTS_DIR": str(folder)}
    lease = gpu_slots.acquire(2, env)
    assert lease.devices == ["0", "2"] and env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert "CUDA_DEVICE_ORDER" not in env  # the user's own numbering is kept
    # Two of three are now taken and one is free: a two-GPU job must take nothing, not the last one.
    held.release()
    assert gpu_slots.try_acquire(folder, ["0", "1", "2"], 2) is None
    one = gpu_slots.try_acquire(folder, ["0", "1", "2"], 1)
    assert one.devices == ["1"]
    lease.release()
    one.release()


def test_slots_on_pools_inside_a_slurm_allocation(tmp_path):
    env = {"SLURM_JOB_ID": "7", "MASKFIELD_GPU_SLOTS": "on", "CUDA_VISIBLE_DEVICES": "2,3",
           "MASKFIELD_GPU_SLOTS_DIR": str(tmp_path / "locks")}
    lease = gpu_slots.acquire(1, env)
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    lease.release()


def test_zero_gpus_takes_nothing(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "MASKFIELD_GPU_SLOTS_DIR": str(tmp_path / "locks")}
    assert gpu_slots.acquire(0, env) is None
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1" and not (tmp_path / "locks").exists()


def test_unknown_mode_is_an_error():
    with pytest.raises(MaskfieldError, match="MASKFIELD_GPU_SLOTS is 'yes'"):
        gpu_slots.acquire(1, {"MASKFIELD_GPU_SLOTS": "yes", "CUDA_VISIBLE_DEVICES": "0"})


@pytest.mark.parametrize(
    "value, ids",
    [("0,1,2,3", ["0", "1", "2", "3"]), (" 3 , 1", ["3", "1"]), ("", []), ("-1", []), ("2,-1,3", ["2"]),
     ("GPU-1b7e0c52,GPU-9d41f3aa", ["GPU-1b7e0c52", "GPU-9d41f3aa"])],
)
def test_parse_visible_devices_follows_cuda(value, ids):
    assert gpu_slots.parse_visible_devices(value) == ids


def test_parse_nvidia_smi_uses_mig_instances_of_partitioned_gpus():
    text = (
        "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)\n"
        "  MIG 3g.20gb     Device  0: (UUID: MIG-1111)\n"
        "  MIG 3g.20gb     Device  1: (UUID: MIG-2222)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)\n"
    )
    assert gpu_slots.parse_nvidia_smi(text) == ["MIG-1111", "MIG-2222", "1"]
    assert gpu_slots.parse_nvidia_smi(TWO_GPUS) == ["0", "1"]
    assert gpu_slots.parse_nvidia_smi("No devices found.\n") == []
