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
}


class Terminated(BaseException):
    """SIGTERM (Snakemake cancelling a job, Slurm at the time limit) raised as an exception, so that
    `atomic_path` removes its temporary file on the way out instead of the process dying in place."""


def _raise_terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maskfield", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    finally:
        record_imports(next((a for a in argv if not a.startswith("-")), None), argv)


def _main(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
