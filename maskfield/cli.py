"""`maskfield <command>`: one thin subcommand per pipeline stage.

Each command parses flags, calls one importable stage function, and turns a `MaskfieldError`
into one sentence on stderr and exit status 2 (no traceback). Commands register themselves in
`COMMANDS` below; the stage modules are imported lazily so `maskfield --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time

from maskfield.errors import MaskfieldError
from maskfield.heap import keep_freed_memory

# command name -> "module:function" that adds the subparser and sets `func` on it.
# Each module owns its flags; the function signature is `register(subparsers) -> None`.
COMMANDS: dict[str, str] = {
    "synthesize": "maskfield.stages.synthesize:register",
    "inspect": "maskfield.stages.inspect:register",
    "masks": "maskfield.stages.teachers:register_masks",
    "embed": "maskfield.stages.teachers:register_embed",
    "train-rgb": "maskfield.stages.rgb:register_train_rgb",
    "geometry": "maskfield.stages.rgb:register_geometry",
    "train-mask": "maskfield.stages.mask:register_train_mask",
    "render": "maskfield.stages.mask:register_render",
    "encode-text": "maskfield.stages.text:register_encode_text",
    "render-teacher": "maskfield.stages.teacher2d:register_render_teacher",
    "evaluate": "maskfield.stages.evaluate:register_evaluate",
    "table": "maskfield.stages.table:register_table",
    "confusion": "maskfield.stages.evaluate:register_confusion",
    "objects": "maskfield.stages.evaluate:register_objects",
    "figures": "maskfield.stages.figures:register_figures",
    "contact-sheet": "maskfield.stages.figures:register_contact_sheet",
    "query": "maskfield.stages.query:register",
    "export": "maskfield.stages.export:register",
    "dense": "maskfield.stages.dense:register_dense",
    "train-perpixel": "maskfield.stages.perpixel:register_train_perpixel",
    "render-perpixel": "maskfield.stages.perpixel:register_render_perpixel",
    "efficiency": "maskfield.stages.efficiency:register_efficiency",
    "paper-table": "maskfield.stages.paper_tables:register_paper_table",
}

# Commands whose training steps make and free large temporaries every step (the per-pixel
# field's 512-d features and gradients): they keep freed heap memory for the next step
# (`maskfield.heap.keep_freed_memory`; docs/architecture.md). The other commands keep glibc's
# default, which returns large blocks to the system when freed: kept, the Replica-size RGB field
# peaked at 2.3 GB instead of 1.6 GB and the simulated SAM masks job at 2.8 GB instead of 2.0 GB,
# for no gain in time.
KEEP_HEAP_COMMANDS = frozenset({"train-perpixel", "efficiency"})


class Terminated(BaseException):
    """SIGTERM (Snakemake cancelling a job, Slurm at the time limit) raised as an exception, so that
    `atomic_path` removes its temporary file on the way out instead of the process dying in place."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated()


def _gpu_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number of GPUs (0 or more), got {text!r}")
    return int(text)


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The options that come before the command."""
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--gpus", type=_gpu_count, default=None, metavar="N",
        help="GPUs this job was granted (Snakemake: {resources.gpu}): take N devices no other maskfield "
        "job holds and set CUDA_VISIBLE_DEVICES to them (waits while none is free; nothing under Slurm, "
        "on a machine without GPUs, or with MASKFIELD_GPU_SLOTS=off; see maskfield.gpu_slots)",
    )


def global_args(argv: list[str]) -> argparse.Namespace:
    """The global options and the command name, read before any command module is imported."""
    parser = argparse.ArgumentParser(prog="maskfield", add_help=False, allow_abbrev=False)
    add_global_options(parser)
    parser.add_argument("command", nargs="?")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    return parser.parse_known_args(argv)[0]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskfield", description=__doc__.splitlines()[0])
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, target in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(run `maskfield {name} -h`)")
            continue
        module_name, func_name = target.split(":")
        getattr(importlib.import_module(module_name), func_name)(sub, name)
    return parser


IMPORT_LOG = "MASKFIELD_IMPORT_LOG"
"""Environment variable: a file to which each command appends one JSON line naming the maskfield
modules it imported (what a rule's code inputs must cover; the workflow tests read it)."""


def record_imports(command: str | None, argv: list[str]) -> None:
    """Append the maskfield source files this process imported to $MASKFIELD_IMPORT_LOG, if set."""
    path = os.environ.get(IMPORT_LOG)
    if not path:
        return
    files = sorted({m.__file__ for name, m in list(sys.modules.items())
                    if (name == "maskfield" or name.startswith("maskfield.")) and getattr(m, "__file__", None)})
    with open(path, "a") as f:
        f.write(json.dumps({"command": command, "argv": argv, "files": files}) + "\n")


def take_gpus(n: int | None, command: str) -> int | None:
    """Hold this job's GPUs (`maskfield.gpu_slots`); an exit status when that fails, else None."""
    if n is None:
        return None
    from maskfield import gpu_slots

    try:
        gpu_slots.acquire(n)
    except MaskfieldError as exc:
        print(f"maskfield {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskfield {command}: interrupted while waiting for a GPU; nothing was run.", file=sys.stderr)
        return 130
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = global_args(argv)
    if pre.command in KEEP_HEAP_COMMANDS:
        keep_freed_memory()  # each step's large temporaries reused, not page-faulted in anew
    command = pre.command if pre.command in COMMANDS else None
    try:
        return _main(argv, pre, command)
    finally:
        record_imports(command, argv)


def _main(argv: list[str], pre: argparse.Namespace, command: str | None) -> int:
    logging.basicConfig(
        level=logging.DEBUG if pre.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Before build_parser: importing a command's module can initialise CUDA (tinycudann does),
    # and CUDA reads CUDA_VISIBLE_DEVICES only once.
    failed = take_gpus(pre.gpus, command) if command else None
    if failed is not None:
        return failed
    parser = build_parser(only=command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    start = time.perf_counter()
    in_main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
    try:
        args.func(args)
    except MaskfieldError as exc:
        message = " ".join(str(exc).split())  # one line, even when a library's message has several
        print(f"maskfield {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"maskfield {args.command}: interrupted; no output was written.", file=sys.stderr)
        return 130
    except Terminated:
        print(f"maskfield {args.command}: terminated (SIGTERM); no output was written.", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    logging.getLogger("maskfield").info("%s finished in %.1f s", args.command, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
