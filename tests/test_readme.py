"""The README's commands run as written: every `make`, `maskfield` and `snakemake` line of its
bash blocks is checked against the real command-line parsers, and the synthetic benchmark's
snakemake commands are dry-run against the workflow, so the manual cannot drift from the CLI."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maskfield.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_commands() -> list[list[str]]:
    """Each command line of the README's ```bash blocks (continuations joined, comments cut)."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = []
            for token in [*shlex.split(line, comments=True), "&&"]:
                if token in ("&&", "||", ";", "|"):
                    commands += [argv] if argv else []
                    argv = []
                else:
                    argv.append(token)
    return commands


def of_program(name: str) -> list[list[str]]:
    """The README's commands that run `name` (bare or from .venv/bin), without the program."""
    return [argv[1:] for argv in readme_commands() if Path(argv[0]).name == name]


def test_the_readme_has_commands_of_each_kind():
    assert len(of_program("snakemake")) >= 8 and len(of_program("maskfield")) >= 3 and of_program("make")


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for argv in of_program("make"):
        for target in argv:
            assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"make {target}: no such target"


@pytest.mark.parametrize("argv", of_program("maskfield"), ids=" ".join)
def test_maskfield_commands_parse(argv):
    """Each maskfield command of the README is accepted by its command's own parser."""
    parser = build_parser(only=argv[0])
    parser.exit = lambda status=0, message=None: pytest.fail(f"maskfield {' '.join(argv)}: {message}")
    args = parser.parse_args(argv)
    assert args.command == argv[0]


@pytest.mark.parametrize("argv", of_program("snakemake"), ids=" ".join)
def test_snakemake_commands_parse(argv):
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    parser.exit = lambda status=0, message=None: pytest.fail(f"snakemake {' '.join(argv)}: {message}")
    args = parser.parse_args(argv)
    for target in args.targets:
        assert target.startswith("results/"), f"snakemake {' '.join(argv)}: target {target} is not a result"


def synthetic_runs() -> list[list[str]]:
    """The README's snakemake commands on the synthetic benchmark (the data it makes itself)."""
    return [argv for argv in of_program("snakemake")
            if any(re.match(r"results/(tables/|tables/paper/|confusion/|objects/)?(synthetic|report|tables/paper)", a)
                   or a.startswith("results/tables/paper/") for a in argv)
            and not any("replica" in a or "ovs3d" in a or "lerf_mask" in a or "/mine/" in a for a in argv)]


def _split_targets(argv: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(targets, the other arguments) of a snakemake command line."""
    targets = tuple(a for a in argv if a.startswith("results/"))
    return targets, tuple(a for a in argv if a not in targets)


@pytest.mark.slow
def test_synthetic_snakemake_commands_dry_run(tmp_path):
    """Each synthetic-benchmark command of the README plans its jobs without an error.

    Commands that differ only in their targets are planned in one Snakemake call (planning the
    workflow costs seconds each time); when such a call fails, each of its commands is planned
    alone so that the failure names the command."""
    runs = [argv for argv in synthetic_runs() if "--report" not in argv]  # a report needs a finished run;
    assert len(runs) >= 6, runs                                          # its flag is checked by the parser test
    shutil.copytree(ROOT / "config", tmp_path / "config")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def plan(argv):
        cmd = [str(BIN / "snakemake"), "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(tmp_path),
               "-n", *argv]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    groups: dict[tuple[str, ...], list[list[str]]] = {}
    for argv in runs:
        groups.setdefault(_split_targets(argv)[1], []).append(argv)
    for flags, commands in groups.items():
        targets = [t for argv in commands for t in _split_targets(argv)[0]]
        if plan([*targets, *flags]).returncode == 0:
            continue
        for argv in commands:
            done = plan(argv)
            assert done.returncode == 0, f"snakemake {' '.join(argv)}:\n{done.stderr[-3000:]}"
        pytest.fail(f"the README's commands {commands} plan one by one but not together")


def test_the_own_capture_config_in_the_readme_is_valid_yaml_with_a_disabled_scene():
    text = (ROOT / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]
    mine = [b for b in blocks if isinstance(b, dict) and "datasets" in b]
    assert mine and all(s.get("enabled") is False for b in mine for d in b["datasets"].values()
                        for s in d["scenes"].values())
