"""docs/raspberry-pi.md runs as written.

The convention (stated in the document itself): a fenced block whose info string is
``sh test`` holds shell commands that run on any machine with a fixnet checkout, one command per
line (``\\`` continues a line, ``#`` starts a comment); ``python test`` holds a Python
script. Those blocks run here, in order, in one scratch folder that sees the checkout's
``models/``, ``fixnet/`` and ``bench/``, with ``fixnet`` and ``python`` on PATH meaning this
checkout and this Python; each command must exit 0 without a traceback. A ``fixnet`` command
the real parser does not know (in any block, tested or not) fails, naming the line.

Blocks without ``test`` (apt, pip, a Pi 4 next to a Pi 5, ...) are not run, but every
``fixnet ...`` and ``bench/peers.py ...`` command in them must parse with the real argument
parsers, so an option the document names exists.
"""
import os
import re
import shlex
import subprocess

import pytest

from conftest import peerbench
from docblocks import scratch_folder

import fixnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "raspberry-pi.md")
FIXNET_DIR = os.path.dirname(fixnet.__file__)
LINKED = ("models", "fixnet", "bench")          # what the commands read, relative to the checkout
TIMEOUT = 600                                   # one command, seconds (emulated arm64 is slow)

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
FIXNET_CALL = re.compile(r"(?:^|[\s;&|(])fixnet\s+([a-z][\w-]*)")


def doc_blocks():
    """[(line number, language, tags, text)] of the fenced blocks of the document."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        line = text.count("\n", 0, m.start()) + 1
        out.append((line, info[0] if info else "", set(info[1:]), m.group(2)))
    return out


def commands(text):
    """The commands of a shell block: continuation lines joined, blank lines and comments out."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line and not line.startswith("#"):
            out.append(line)
    return out


def fixnet_commands():
    """The subcommands of the real `fixnet` parser."""
    import argparse
    from fixnet.cli import build_parser
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def has_command(name):
    return name in fixnet_commands()


def _runnable():
    return [b for b in doc_blocks() if "test" in b[2]]


def _untested_shell():
    return [b for b in doc_blocks() if "test" not in b[2] and b[1] in ("sh", "console", "bash")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch folder with the checkout's folders linked in, and a PATH where `fixnet` and
    `python` are this checkout and this interpreter."""
    d = tmp_path_factory.mktemp("pi-doc")
    env = scratch_folder(d, LINKED, ROOT, FIXNET_DIR)
    return d, env


def test_the_document_has_runnable_blocks_for_each_part():
    """A broken tag would silently turn the checks off: the parts the document promises to
    check must each have a runnable block."""
    runnable = "\n".join(text for _, _, _, text in _runnable())
    for needle in ("fixnet info --system", "fixnet demo", "fixnet bench ", "--json",
                   "fixnet bench --compare", "FIXNET_ISA=baseline", "bench/peers.py",
                   "fixnet.load("):
        assert needle in runnable, f"no runnable block of {DOC} has {needle!r}"


@pytest.mark.parametrize("block", _runnable(), ids=lambda b: f"line{b[0]}")
def test_runnable_block(block, workdir):
    line, lang, _, text = block
    d, env = workdir
    if lang == "python":
        script = d / f"block_line{line}.py"
        script.write_text(text)
        cmds = [f"python {script.name}"]
    elif lang in ("sh", "bash", "console"):
        cmds = commands(text)
    else:
        raise AssertionError(f"{DOC} line {line}: a 'test' block in {lang!r}: only sh or python")
    missing = sorted({name for c in cmds for name in FIXNET_CALL.findall(c)
                      if not has_command(name)})
    assert not missing, f"{DOC} line {line}: `fixnet {missing[0]}` is not a fixnet command"
    assert cmds, f"{DOC} line {line}: an empty test block"
    for cmd in cmds:
        assert not re.search(r"\b(sudo|apt|apt-get|pip)\b", cmd), \
            f"{DOC} line {line}: {cmd!r} changes the machine: not for a 'test' block"
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=str(d), env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, f"{DOC} line {line}: {cmd}\n{r.stdout[-3000:]}\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{DOC} line {line}: {cmd}\n{r.stderr}"


def _argv(cmd):
    """(kind, argv) of a `fixnet ...` or `python bench/peers.py ...` command, else None;
    leading VAR=value assignments are dropped."""
    words = shlex.split(cmd, comments=True)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)
    if words[:1] == ["fixnet"]:
        return "fixnet", words[1:]
    if len(words) >= 2 and words[0] in ("python", "python3") and words[1] == "bench/peers.py":
        return "peers", words[2:]
    return None


def test_every_fixnet_and_peers_command_in_the_document_parses():
    from fixnet.cli import build_parser

    peers_cli = peerbench("cli")
    known = fixnet_commands()
    checked = 0
    for line, _, _, text in _untested_shell() + _runnable():
        for cmd in commands(text):
            parsed = _argv(cmd)
            if parsed is None or parsed[0] != "fixnet":
                # a fixnet call this test cannot parse (after `time`, in a pipe, ...) would go
                # unchecked: the document must write it as a command of its own
                assert not FIXNET_CALL.findall(cmd), \
                    f"{DOC} line {line}: {cmd!r} calls fixnet in a form this test does not parse"
            if parsed is None:
                continue
            kind, argv = parsed
            if kind == "fixnet" and argv and argv[0] not in ("--help", "-h"):
                assert argv[0] in known, (f"{DOC} line {line}: `fixnet {argv[0]}` is not a fixnet "
                                          f"command (the parser has {sorted(known)})")
            try:
                if kind == "fixnet":
                    build_parser().parse_args(argv)
                else:
                    peers_cli.parse_args(argv)
            except SystemExit as e:
                if e.code in (0, None):         # --help
                    continue
                raise AssertionError(f"{DOC} line {line}: {cmd!r} does not parse "
                                     f"(exit {e.code})") from None
            checked += 1
    assert checked >= 10, f"only {checked} commands found in {DOC}"


def test_an_unknown_fixnet_command_fails_the_checks(monkeypatch):
    """The checks above refuse a `fixnet` command the parser does not know, in an untested
    block and in a tested one (before running anything)."""
    import sys
    text = "fixnet info --system\nfixnet frobnicate models/x.h5\n"
    monkeypatch.setattr(sys.modules[__name__], "doc_blocks", lambda: [(1, "sh", set(), text)])
    with pytest.raises(AssertionError, match="`fixnet frobnicate` is not a fixnet command"):
        test_every_fixnet_and_peers_command_in_the_document_parses()
    with pytest.raises(AssertionError, match="`fixnet frobnicate` is not a fixnet command"):
        test_runnable_block((1, "sh", {"test"}, text), (None, None))
