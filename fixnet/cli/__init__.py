"""The ``fixnet`` command line: one module per command in this package (``demo.py``,
``info.py``, ``inspect.py``, ``quantize.py``, ``predict.py``, ``bench.py``, ``report.py``),
each with HELP, EXAMPLE, ``add_arguments(parser)`` and ``run(args) -> exit code``.

Exit codes: 0 success, 2 usage (a bad or missing argument), 1 failure (a file that cannot be
read, a model that cannot be quantized, ...). Every error is one line on stderr naming the file
or argument; ``--debug`` adds the traceback. Output piped into a reader that stops early
(``fixnet info model.h5 | head``) ends quietly.
"""
import argparse
import importlib
import importlib.util
import os
import sys
import textwrap
import traceback

from ..errors import FixnetError

COMMANDS = ("demo", "info", "inspect", "quantize", "predict", "bench", "report")


class UsageError(FixnetError):
    """A command's arguments do not go together (e.g. a .json model without --weights): one
    line on stderr and exit code 2, as argparse's own usage errors."""


class CommandLineParser(argparse.ArgumentParser):
    """argparse with a one-line usage error (and exit code 2)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _command_modules():
    for name in COMMANDS:
        if importlib.util.find_spec(f"{__name__}.{name}") is not None:
            yield name, importlib.import_module(f"{__name__}.{name}")


def _description(module):
    """A command module's docstring's first paragraph without its "`fixnet NAME`: " prefix."""
    text = " ".join(module.__doc__.split("\n\n")[0].split())
    text = text.split("`: ", 1)[1] if text.startswith("`fixnet ") and "`: " in text else text
    return textwrap.fill(text, 88)       # (the raw formatter, for the example, does not wrap)


def build_parser():
    parser = CommandLineParser(
        prog="fixnet", description="int8 fixed-point inference for Keras models",
        epilog="Run 'fixnet COMMAND --help' for a command's options and an example.")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the Python traceback too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules():
        p = sub.add_parser(name, help=module.HELP, description=_description(module), epilog="example:\n  " + module.EXAMPLE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, print the Python traceback too")
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def one_line(message):
    """A message as one line: its lines joined with '; ' (with ' ' after a line that ends in
    a colon, which introduces the lines after it)."""
    text = ""
    for line in (s.strip() for s in str(message).splitlines()):
        if line:
            text += ("" if not text else " " if text.endswith(":") else "; ") + line
    return text


def _silence_stdout():
    """After a reader closed our stdout (``| head``): send what is still buffered nowhere so
    that Python's exit does not print a BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    prog = f"fixnet {args.command}"
    try:
        code = args.run(args) or 0
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(e)} (see {prog} --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:            # every failure becomes one line (a traceback with --debug)
        if args.debug:
            traceback.print_exc()
        if isinstance(e, FixnetError):
            msg = one_line(e)
        elif isinstance(e, OSError) and e.filename is not None:
            msg = f"{e.filename}: {e.strerror or one_line(e)}"
        elif isinstance(e, MemoryError):
            msg = "out of memory (a smaller --batch may help)"
        else:
            msg = (f"internal error: {type(e).__name__}: {one_line(e)} (run again with --debug "
                   "for the traceback, and please report it)")
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 1
