"""README.md and docs/*.md (all but raspberry-pi.md, which tests/test_docs_pi.py runs) run as
written, and their links lead somewhere.

The convention, stated in each page: a fenced block whose info string is ``sh test`` holds
shell commands, one per line (``\\`` continues a line, ``#`` starts a comment, a heredoc runs
with its command); ``python test`` holds a Python script. They run here, in order, one scratch
folder per document that links the checkout's ``models/``, ``fixnet/``, ``bench/``, ``tools/``
and ``tests/``, with ``fixnet`` and ``python`` on PATH meaning this checkout and this
interpreter. Each command must exit 0 without a traceback on stderr; a command that is not a
fixnet command, or a Python block that raises, fails. A ``needs=TOOL,...`` tag skips the block,
saying so, where a tool is not on PATH.

Every other block must say what it is: ``text`` for sample output or formulas (never run), or
an untagged ``sh`` block for commands that install, rebuild or take long. Those are not run, but
every ``fixnet ...`` command in them must parse with the real argument parser, and the scripts,
test files and pytest markers they name must exist. A Python block is always run.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess

import pytest

import fixnet
from docblocks import scratch_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXNET_DIR = os.path.dirname(fixnet.__file__)
LINKED = ("models", "fixnet", "bench", "tools", "tests")
TIMEOUT = 300                       # one command, seconds
NOT_HERE = {"raspberry-pi.md",      # run by tests/test_docs_pi.py
            "tutorial.md"}        # run by tests/test_tutorial.py (its outputs compared too)


def _docs():
    names = sorted(f for f in os.listdir(os.path.join(ROOT, "docs"))
                   if f.endswith(".md") and f not in NOT_HERE)
    return ["README.md"] + [f"docs/{f}" for f in names]


DOCS = _docs()
ALL_PAGES = ["README.md"] + sorted(f"docs/{f}" for f in os.listdir(os.path.join(ROOT, "docs"))
                                   if f.endswith(".md"))

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}


def _read(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        return f.read()


def blocks(doc):
    """[(doc, line, language, tags, text)]: tags is a set of words, 'needs=...' included."""
    text = _read(doc)
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        line = text.count("\n", 0, m.start()) + 1
        out.append((doc, line, info[0] if info else "", set(info[1:]), m.group(2)))
    return out


def _blocks_of_all():
    return [b for doc in DOCS for b in blocks(doc)]


def _runnable():
    return [b for b in _blocks_of_all() if "test" in b[3]]


def _needs(tags):
    return [t for tag in tags if tag.startswith("needs=") for t in tag[6:].split(",") if t]


def commands(text):
    """The commands of a shell block: continuation lines joined, a heredoc kept with the line
    that opens it, blank lines and comments out."""
    out, pending, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if not line or line.startswith("#"):
            continue
        m = HEREDOC.search(line)
        if m:
            body = []
            while i < len(lines) and lines[i].strip() != m.group(2):
                body.append(lines[i])
                i += 1
            body.append(lines[i] if i < len(lines) else m.group(2))
            i += 1
            while i < len(lines) and lines[i].rstrip().endswith("\\"):    # a command after it
                body.append(lines[i])
                i += 1
            if i < len(lines) and body[-1].rstrip().endswith("\\"):
                body.append(lines[i])
                i += 1
            line = "\n".join([line] + body)
        out.append(line)
    return out


def simple_commands(cmd):
    """The simple commands of a command line (split at &&, ||, ;, |), as word lists, with
    leading VAR=value assignments dropped. Heredoc bodies are not commands."""
    first = cmd.split("\n", 1)[0] if HEREDOC.search(cmd.split("\n", 1)[0]) else cmd
    lex = shlex.shlex(first, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        tokens = list(lex)
    except ValueError:                    # an unbalanced quote: the line is not one command
        return []
    out, cur = [], []
    for tok in tokens + [";"]:
        if tok in SEPARATORS or (tok and set(tok) <= set("&|;()<>")):
            while cur and re.match(r"^[A-Z_][A-Z0-9_]*=", cur[0]):
                cur.pop(0)
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return out


def _has_command(name):
    import importlib.util
    return importlib.util.find_spec(f"fixnet.cli.{name}") is not None


_workdirs = {}


@pytest.fixture
def workdir(tmp_path_factory, request):
    """One scratch folder per document (its blocks share it, in order), with the checkout's
    folders linked in and a PATH where `fixnet` and `python` are this checkout and interpreter."""
    doc = request.node.callspec.params["block"][0]
    if doc in _workdirs:
        return _workdirs[doc]
    d = tmp_path_factory.mktemp(re.sub(r"\W", "_", doc))
    env = scratch_folder(d, LINKED, ROOT, FIXNET_DIR, MPLBACKEND="Agg")
    env.pop("FIXNET_ISA", None)
    _workdirs[doc] = (d, env)
    return _workdirs[doc]


# ---- the blocks ---------------------------------------------------------------------------

def test_every_block_says_what_it_is():
    """A block with no language, or a Python block that is not run, would silently escape the
    checks below."""
    bad = []
    for doc, line, lang, tags, _ in _blocks_of_all():
        if lang not in ("sh", "python", "text"):
            bad.append(f"{doc} line {line}: language {lang!r} (sh, python or text)")
        elif lang == "python" and "test" not in tags:
            bad.append(f"{doc} line {line}: a Python block not tagged 'test'")
        elif lang == "text" and "test" in tags:
            bad.append(f"{doc} line {line}: a 'text' block is output, it cannot be a test")
        unknown = {t for t in tags if t != "test" and not t.startswith("needs=")}
        if unknown:
            bad.append(f"{doc} line {line}: unknown tags {sorted(unknown)}")
    assert not bad, "\n".join(bad)


def test_every_document_has_runnable_blocks():
    runnable = {b[0] for b in _runnable()}
    missing = [d for d in DOCS if d not in runnable]
    assert not missing, f"no 'sh test' or 'python test' block in {missing}"
    readme = "\n".join(b[4] for b in _runnable() if b[0] == "README.md")
    for needle in ("fixnet.load(", ".quantize(", ".predict(", "fixnet quantize",
                   "fixnet predict", "fixnet bench", "fixnet info"):
        assert needle in readme, f"no runnable block of README.md has {needle!r}"


@pytest.mark.parametrize("block", _runnable(), ids=lambda b: f"{b[0]}:{b[1]}")
def test_runnable_block(block, workdir):
    doc, line, lang, tags, text = block
    missing_tools = [t for t in _needs(tags) if shutil.which(t) is None]
    if missing_tools:
        pytest.skip(f"{doc} line {line} needs {', '.join(missing_tools)}, not on PATH")
    d, env = workdir
    if lang == "python":
        script = d / f"block_line{line}.py"
        script.write_text(text)
        cmds = [f"python {script.name}"]
    elif lang == "sh":
        cmds = commands(text)
    else:
        raise AssertionError(f"{doc} line {line}: a 'test' block in {lang!r}: only sh or python")
    assert cmds, f"{doc} line {line}: an empty test block"
    for cmd in cmds:
        for words in simple_commands(cmd):
            assert words[0] not in ("sudo", "apt", "apt-get", "pip", "pip3"), \
                f"{doc} line {line}: {cmd!r} changes the machine: not for a 'test' block"
            if words[0] == "fixnet" and len(words) > 1 and not words[1].startswith("-"):
                assert _has_command(words[1]), \
                    f"{doc} line {line}: `fixnet {words[1]}` is not a fixnet command"
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=str(d), env=env,
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, f"{doc} line {line}: {cmd}\n{r.stdout[-3000:]}\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{doc} line {line}: {cmd}\n{r.stderr}"


def _markers():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        return set(re.findall(r'^\s*"(\w+):', f.read(), re.M))


def test_every_command_names_what_exists():
    """In every sh block, run or not: `fixnet ...` parses with the real parser; a script,
    test file or pytest marker a command names exists."""
    from fixnet.cli import build_parser

    markers = _markers()
    checked, bad = 0, []
    for doc, line, lang, _, text in _blocks_of_all():
        if lang != "sh":
            continue
        for cmd in commands(text):
            for words in simple_commands(cmd):
                where = f"{doc} line {line}: {' '.join(words)!r}"
                if words[0] == "fixnet":
                    try:
                        build_parser().parse_args(words[1:])
                    except SystemExit as e:
                        if e.code not in (0, None):
                            bad.append(f"{where} does not parse (exit {e.code})")
                    checked += 1
                elif words[0] in ("python", "python3") and len(words) > 1 \
                        and words[1].endswith(".py"):
                    if not os.path.isfile(os.path.join(ROOT, words[1])):
                        bad.append(f"{where}: no file {words[1]}")
                    checked += 1
                elif words[0] == "pytest":
                    for i, w in enumerate(words[1:], 1):
                        if w.startswith("tests/") and not glob.glob(os.path.join(ROOT, w)):
                            bad.append(f"{where}: no file {w}")
                        if words[i - 1] == "-m" and w not in markers:
                            bad.append(f"{where}: no pytest marker {w!r} in pyproject.toml")
                    checked += 1
    assert not bad, "\n".join(bad)
    assert checked >= 30, f"only {checked} commands found in {DOCS}"


def test_the_readme_keeps_the_two_commands():
    """CI (.ci/run) runs the README's test command: it must stay the README's."""
    setup = [b[4] for b in blocks("README.md") if b[2] == "sh" and "test" not in b[3]]
    lines = [c.split("#")[0].strip() for text in setup for c in commands(text)]
    assert "pip install . && fixnet demo" in lines, lines
    assert "pip install '.[test]' && pytest" in lines, lines
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert "pip install '.[test]' && pytest" in f.read()


# ---- links and paths ----------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _prose(text):
    """The text outside fenced blocks and code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(text):
    """GitHub's anchors of a Markdown file's headings."""
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", ""))
        out.add(slug.replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", ALL_PAGES)
def test_relative_links_resolve(doc):
    text = _read(doc)
    bad = []
    for m in LINK.finditer(_prose(text)):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # http:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), path)) if path \
            else os.path.join(ROOT, doc)
        if not os.path.exists(full):
            bad.append(f"{target}: no such file")
        elif anchor and full.endswith(".md"):
            with open(full, encoding="utf-8") as f:
                if anchor not in _anchors(f.read()):
                    bad.append(f"{target}: no heading #{anchor} in {os.path.relpath(full, ROOT)}")
    assert not bad, f"{doc}:\n" + "\n".join(bad)


PATH_SPAN = re.compile(r"`((?:fixnet|tests|tools|bench|models|docs)/[^`\s]*)`")


@pytest.mark.parametrize("doc", DOCS)
def test_the_files_a_page_names_exist(doc):
    """`fixnet/...`, `tests/...` and the like in the prose name files of this checkout
    (placeholders such as `fixnet/ops/<op>.py` or `_X.pyx` aside; `*` as a glob)."""
    bad = []
    for m in PATH_SPAN.finditer(FENCE.sub("", _read(doc))):
        path = m.group(1)
        if re.search(r"[<>{}]|(?:^|[/_])X\.", path):
            continue
        if not glob.glob(os.path.join(ROOT, path.rstrip("/"))):
            bad.append(path)
    assert not bad, f"{doc} names files that do not exist: {bad}"
