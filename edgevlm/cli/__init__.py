"""The ``edgevlm`` command line: one subcommand per module of this package.

Every subcommand takes ``--json`` for machine-readable output. Bad input (a missing model, an
unknown model type, a corrupt file, a prompt too long) prints one line and exits with code 2.
Other libraries' warnings and logs go to a log file that the command names once
(:mod:`.library_log`); ``--verbose`` shows them live instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import EdgeVLMError
from . import bench, demo, evaluation, export, info, inspect, library_log, llama2c, quantize, run, serve
from .output import err

COMMANDS = {"demo": demo, "info": info, "run": run, "eval": evaluation, "quantize": quantize,
            "export": export, "inspect": inspect, "bench": bench,
            "import-llama2c": llama2c, "serve": serve}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.add_argument("--verbose", action="store_true",
                       help="show other libraries' warnings and logs live (default: into a log file the output names)")
        p.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = None
    try:
        with library_log.capture(args.command, args.verbose) as log:
            args.library_log = log
            rc = int(args.handler(args) or 0)
            note = log.note()
            if note and not getattr(args, "library_log_named", False):
                err().write(note + "\n")
            return rc
    except EdgeVLMError as e:
        print(f"edgevlm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edgevlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if log is not None and log.path is not None:
            print(f"edgevlm {args.command}: other libraries' messages are in {log.path}", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
