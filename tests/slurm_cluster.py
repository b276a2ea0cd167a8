"""A throw-away one-node Slurm cluster for tests (munged + slurmctld + slurmd).

Everything lives in one scratch folder: the munge key and socket, slurm.conf,
state, spool, pid and log files. Nothing under /etc or /run is touched, so several
test sessions (or a real Slurm install) can coexist on the same machine: each
cluster has its own munge socket (slurm.conf `AuthInfo=socket=...`) and its own
free ports.

Use `SlurmCluster.start()` (or the `local_slurm_cluster()` context manager); pass
`cluster.env` to every subprocess that talks to Slurm (it carries `SLURM_CONF`).
When the binaries are missing or the daemons do not come up in time the start
raises `pytest.skip` with the reason, unless `MASKFIELD_REQUIRE_SLURM` is set in
the environment: then it fails, so a CI machine that is meant to have Slurm cannot
pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

# What the cluster needs on PATH; the client tools are what tests and the
# Snakemake SLURM plugin call.
REQUIRED_BINARIES = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel")

# Client commands that get a SLURM_CONF-pinning wrapper (see write_client_shims).
CLIENT_TOOLS = ("srun", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "sacct", "salloc", "sacctmgr", "sshare")

# Stand-ins for GPU device files in gres.conf (see write_config); one per fake GPU.
FAKE_GPU_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom")

# slurmd refuses a node whose configured RealMemory exceeds what it measures, so
# we configure a little less than MemTotal.
MEMORY_MARGIN_MB = 512


def _give_up(reason: str):
    """Skip (default) or fail (MASKFIELD_REQUIRE_SLURM set) with the exact reason."""
    if os.environ.get("MASKFIELD_REQUIRE_SLURM"):
        pytest.fail(f"local Slurm cluster unavailable: {reason}", pytrace=False)
    pytest.skip(f"local Slurm cluster unavailable: {reason}")


def _free_port() -> int:
    # Bind to port 0 and let the kernel choose; the tiny race until slurmctld
    # binds it is acceptable for a test cluster.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _real_memory_mb() -> int:
    text = Path("/proc/meminfo").read_text()
    kb = int(re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.M).group(1))
    return max(256, kb // 1024 - MEMORY_MARGIN_MB)


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path.name} missing)"
    return "\n".join(lines[-n:])


def _pid_alive(pid: int) -> bool:
    # A zombie (state Z) has exited; it only lingers where PID 1 does not reap orphans.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class SlurmCluster:
    """One munged + slurmctld + slurmd, configured and stored under `root`."""

    def __init__(self, root: Path | None = None, partition: str = "main", fake_gpus: int = 0):
        # munged insists that every directory above its socket is world-searchable,
        # and pytest's tmp_path lives under a 0700 folder, hence our own mkdtemp.
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="maskfield-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.partition = partition
        # fake_gpus > 0 declares that many `gpu` GRES on the node without any device
        # behind them, so jobs asking `--gpus=N` (the pipeline's GPU rules) are
        # scheduled instead of rejected; nothing gets a real GPU from this.
        if not 0 <= fake_gpus <= len(FAKE_GPU_DEVICES):
            raise ValueError(f"fake_gpus must be 0..{len(FAKE_GPU_DEVICES)}, got {fake_gpus}")
        self.fake_gpus = fake_gpus
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.ctld_log = self.root / "log" / "slurmctld.log"
        self.slurmd_log = self.root / "log" / "slurmd.log"
        self.pid_files = {
            # stop order: node first, then controller, then munge
            "slurmd": self.root / "run" / "slurmd.pid",
            "slurmctld": self.root / "run" / "slurmctld.pid",
            "munged": self.root / "run" / "munged.pid",
        }
        self.env = self._clean_env()
        self.started = False

    # ----------------------------------------------------------------- setup
    def _clean_env(self) -> dict:
        # Drop inherited SLURM_* variables (e.g. when the suite itself runs inside a
        # Slurm job): they would point sbatch/squeue at the wrong job or cluster.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def write_client_shims(self) -> None:
        """Put wrappers for the Slurm client commands in <root>/bin that pin SLURM_CONF.

        SLURM_CONF in the environment is not enough: inside a job,
        snakemake-executor-plugin-slurm-jobstep (0.6.x) deletes every SLURM_*
        variable it does not know before its nested `srun`, and srun then looks for
        /etc/slurm/slurm.conf. We must not write there (other clusters, a real
        install), so the job finds this cluster through PATH instead, which
        `sbatch --export=ALL` carries into the job.
        """
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        for tool in CLIENT_TOOLS:
            real = shutil.which(tool)
            if real is None:
                continue
            shim = bindir / tool
            shim.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{real}" "$@"\n')
            shim.chmod(0o755)

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log", "run"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "munge").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))  # a private key: no trust in /etc/munge
        key.chmod(0o400)
        ctld_port = _free_port()
        slurmd_port = _free_port()
        while slurmd_port == ctld_port:
            slurmd_port = _free_port()
        r = self.root
        lines = [
            "ClusterName=maskfieldtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}",
            f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "SchedulerType=sched/builtin",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            # Accounting is off, so `squeue --states=all` is the only record of a
            # finished job; keep finished jobs for an hour (the SLURM plugin wants
            # MinJobAge >= 3x its first status-check delay to trust squeue).
            "MinJobAge=3600",
            "MailProg=/bin/true",
            # Trust the CPUs/RealMemory below even if slurmd measures differently
            # (cpusets, containers), instead of draining the only node.
            "SlurmdParameters=config_overrides",
            *(["GresTypes=gpu"] if self.fake_gpus else []),
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={len(os.sched_getaffinity(0))} "
            f"RealMemory={_real_memory_mb()}"
            + (f" Gres=gpu:{self.fake_gpus}" if self.fake_gpus else "")
            + " State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        if self.fake_gpus:
            # gres.conf is read from the folder of slurm.conf. slurmd counts gpus by
            # their device files (without File= it reports 0 and the node is INVAL), so
            # harmless character devices stand in for the missing cards, one each.
            files = ",".join(FAKE_GPU_DEVICES[: self.fake_gpus])
            (self.root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File={files}\n")
        self.write_client_shims()

    def _run(self, args, timeout=20, check=False, input=None) -> subprocess.CompletedProcess:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=check, input=input)

    def start(self, timeout: float = 60.0) -> "SlurmCluster":
        missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
        reason = None
        if missing:
            reason = f"not installed: {', '.join(missing)} (apt-get install -y slurm-wlm munge)"
        elif os.geteuid() != 0:
            reason = "slurmd must run as root to launch jobs, and this test run is not root"
        if reason:
            shutil.rmtree(self.root, ignore_errors=True)
            _give_up(reason)
        self.write_config()
        deadline = time.monotonic() + timeout
        try:
            self._start_munge()
            self._start_daemon(["slurmctld", "-f", str(self.conf)], self.ctld_log)
            self._start_daemon(["slurmd", "-f", str(self.conf)], self.slurmd_log)
            self._wait_idle(deadline)
        except (_StartError, subprocess.TimeoutExpired) as e:
            self.stop()
            _give_up(str(e))
        except BaseException:
            self.stop()  # never leave daemons behind, whatever went wrong
            raise
        self.started = True
        return self

    def _start_munge(self) -> None:
        r = self.root / "munge"
        p = self._run(
            ["munged", f"--socket={self.munge_socket}", f"--key-file={r / 'munge.key'}",
             f"--log-file={self.root / 'log' / 'munged.log'}", f"--pid-file={self.pid_files['munged']}",
             f"--seed-file={r / 'munged.seed'}"]
        )
        if p.returncode != 0:
            raise _StartError(f"munged exited {p.returncode}: {p.stderr.strip()}")
        cred = self._run(["munge", "-S", str(self.munge_socket), "-n"])
        check = self._run(["unmunge", "-S", str(self.munge_socket)], input=cred.stdout)
        if "Success" not in check.stdout:
            raise _StartError(f"munge round trip failed: {cred.stderr.strip()} {check.stdout.strip()} {check.stderr.strip()}")

    def _start_daemon(self, args, log: Path) -> None:
        # Both daemons fork into the background and write their pid files; a
        # non-zero exit here means the configuration was rejected.
        p = self._run(args)
        if p.returncode != 0:
            raise _StartError(f"{args[0]} exited {p.returncode}: {p.stderr.strip()}\n{_tail(log)}")

    def _wait_idle(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            p = self._run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
            state = (p.stdout or p.stderr).strip()
            if state == "idle":
                return
            if "inval" in state or "drain" in state:
                # the controller rejected the node's registration; waiting won't help
                break
            time.sleep(0.5)
        raise _StartError(
            f"node not idle (sinfo says {state!r})\n"
            f"slurmctld.log:\n{_tail(self.ctld_log)}\nslurmd.log:\n{_tail(self.slurmd_log)}"
        )

    # ------------------------------------------------------------- teardown
    def stop(self, keep: bool | None = None) -> None:
        """Cancel leftover jobs, stop our three daemons (by pid file), delete the folder."""
        if self.pid_files["slurmctld"].exists():
            with contextlib.suppress(Exception):
                self._run(["scancel", "--user", "root"], timeout=10)
        for name, pid_file in self.pid_files.items():
            self._stop_pid(name, pid_file)
        self.started = False
        if keep is None:
            keep = bool(os.environ.get("MASKFIELD_KEEP_SLURM_SCRATCH"))
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _stop_pid(name: str, pid_file: Path, grace: float = 10.0) -> None:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        # A stale pid file could name an unrelated process that reused the pid;
        # only signal it if it is still the daemon we started.
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return
        if comm != name:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while _pid_alive(pid) and time.monotonic() < end:
            time.sleep(0.1)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -------------------------------------------------------------- queries
    def squeue_states(self) -> dict[str, str]:
        """{job id: state} for every job the controller still remembers (finished ones included)."""
        p = self._run(["squeue", "--states=all", "--noheader", "--format=%i|%T"], check=True)
        return dict(line.split("|", 1) for line in p.stdout.split())

    def controller_log(self) -> str:
        return self.ctld_log.read_text(errors="replace") if self.ctld_log.exists() else ""


class _StartError(RuntimeError):
    pass


@contextlib.contextmanager
def local_slurm_cluster(timeout: float = 60.0, **kwargs):
    """Start a cluster for the `with` block (skips the test if it cannot start).

    kwargs go to SlurmCluster (partition=..., fake_gpus=...).
    """
    cluster = SlurmCluster(**kwargs)
    cluster.start(timeout=timeout)
    try:
        yield cluster
    finally:
        cluster.stop()
