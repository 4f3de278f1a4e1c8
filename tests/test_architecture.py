"""ARCHITECTURE.md's layers hold in the code: no module of fixnet/ imports a module of a higher
layer, the imports form no cycle (imports inside functions count), and every module is in a
layer. The code is read with ast; fixnet is not imported."""
import ast
import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(root):
    """{dotted name: path} of every .py file under root/fixnet (a package by its __init__)."""
    out = {}
    for d, _, files in os.walk(os.path.join(root, "fixnet")):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                name = os.path.relpath(p, root)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def imports(name, path, mods):
    """The fixnet modules ``name`` imports anywhere in its code (functions included). ``from
    a import b`` is an import of a.b where that is a module, else of a; ``from . import b``
    inside a sub-package counts as importing that package too. A module's parent packages,
    which Python runs first, are not counted otherwise (they import their children)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_pkg = path.endswith("__init__.py")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                       for a in node.names]
            if node.level and not node.module and base != "fixnet":
                # `from . import x` names the package itself: counted as importing it (its
                # __init__), as readers and tools take it; the root package is everyone's parent
                targets.append(base)
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph(root):
    mods = modules(root)
    return {m: imports(m, p, mods) for m, p in mods.items()}


def layers(root):
    """[(number, layer name, [patterns])] from ARCHITECTURE.md's table."""
    rows = []
    for line in open(os.path.join(root, "ARCHITECTURE.md"), encoding="utf-8"):
        m = re.match(r"\|\s*(\d+)\s*\|\s*([^|]+?)\s*\|([^|]*)\|", line)
        if m:
            rows.append((int(m.group(1)), m.group(2), re.findall(r"`([\w.*]+)`", m.group(3))))
    return rows


def layer_of(module, rows):
    for number, name, patterns in rows:
        for p in patterns:
            if module == p or (p.endswith(".*") and (module == p[:-2]
                                                     or module.startswith(p[:-1]))):
                return number, name
    return None


def cycles(g):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def problems(root):
    """Every way the code at root breaks ARCHITECTURE.md, one line each."""
    rows = layers(root)
    g = graph(root)
    out = []
    for m in sorted(g):
        lm = layer_of(m, rows)
        if lm is None:
            out.append(f"{m} is in no layer of ARCHITECTURE.md")
            continue
        for d in sorted(g[m]):
            ld = layer_of(d, rows)
            if ld is not None and ld[0] > lm[0]:
                out.append(f"{m} (layer {lm[0]}, {lm[1]}) imports {d} (layer {ld[0]}, {ld[1]})")
    for c in cycles(g):
        out.append("import cycle: " + " <-> ".join(c))
    return out


def test_the_table_has_every_layer_once():
    rows = layers(ROOT)
    assert [n for n, _, _ in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 8
    assert all(patterns for _, _, patterns in rows)


def test_the_package_follows_its_layers_and_has_no_import_cycle():
    g = graph(ROOT)
    assert "fixnet.runtime" in g and "fixnet.ops.dense" in g and len(g) > 60
    assert problems(ROOT) == []


def _copy(tmp_path):
    shutil.copytree(os.path.join(ROOT, "fixnet"), tmp_path / "fixnet",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.pyx", "*.h", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "ARCHITECTURE.md"), tmp_path / "ARCHITECTURE.md")
    return tmp_path


def _add_line(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n\n" + line + "\n")


def test_an_upward_import_inside_a_function_is_caught(tmp_path):
    root = _copy(tmp_path)
    _add_line(root / "fixnet" / "ops" / "dense.py",
              "def _late():\n    from ..runtime import QuantizedModel\n    return QuantizedModel")
    found = problems(root)
    assert any(p.startswith("fixnet.ops.dense (layer 5, ops) imports fixnet.runtime (layer 10")
               for p in found), found


def test_a_cycle_within_a_layer_is_caught(tmp_path):
    root = _copy(tmp_path)
    # report already imports checked (same layer); the way back closes a cycle
    _add_line(root / "fixnet" / "checked.py", "from . import report")
    assert "import cycle: fixnet.checked <-> fixnet.report" in problems(root)


def test_a_module_in_no_layer_is_caught(tmp_path):
    root = _copy(tmp_path)
    (root / "fixnet" / "newthing.py").write_text("X = 1\n")
    assert "fixnet.newthing is in no layer of ARCHITECTURE.md" in problems(root)


@pytest.mark.parametrize("module, layer", [
    ("fixnet.step", 4), ("fixnet.ops.dense", 5), ("fixnet.ops", 5), ("fixnet.oracle.core", 2),
    ("fixnet._kernels", 2), ("fixnet.fxn", 7), ("fixnet.quant.qparams", 3),
    ("fixnet.quant.quantizer", 11), ("fixnet.cli.bench", 11), ("fixnet", 11)])
def test_patterns_place_modules(module, layer):
    assert layer_of(module, layers(ROOT))[0] == layer


def test_pyproject_installs_every_package():
    """pyproject.toml lists the packages by hand: a new package missing there would be left out
    of the installed fixnet (the tests of an in-place build would not notice)."""
    import subprocess
    import tomllib
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    try:
        tracked = subprocess.run(["git", "ls-files", "fixnet"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.split()
    except OSError:       # no git here
        tracked = []
    if not tracked:       # not a git checkout (an sdist), or no git: the folders on disk
        tracked = [os.path.relpath(os.path.join(d, "__init__.py"), ROOT)
                   for d, _, files in os.walk(os.path.join(ROOT, "fixnet"))
                   if "__init__.py" in files and "isa_" not in d]
    packages = {os.path.dirname(p).replace("/", ".") for p in tracked
                if p.endswith("/__init__.py")}
    assert "fixnet.keras.layers" in packages and packages == listed


MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def test_no_module_over_600_lines_and_no_function_over_80_without_a_reason():
    """A longer function must say why in its docstring ("Long because ...")."""
    too_long = []
    for name, path in modules(ROOT).items():
        text = open(path, encoding="utf-8").read()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text, path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and "Long because" not in (ast.get_docstring(node) or ""):
                    too_long.append(f"{name}.{node.name}: {n} lines")
    assert too_long == []


def test_every_op_module_has_its_row_and_its_files_exist():
    """ARCHITECTURE.md's "Where an op lives": a row per fixnet/ops/X.py (the package's shared
    modules aside), whose oracle and kernel files exist."""
    text = open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8").read()
    table = text[text.index("## Where an op lives"):]
    rows = {}
    for line in table.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|[^|]*\|([^|]*)\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2) + m.group(3)
    ops = {f[:-3] for f in os.listdir(os.path.join(ROOT, "fixnet", "ops"))
           if f.endswith(".py") and f not in ("__init__.py", "base.py", "spatial.py")}
    assert ops and set(rows) == ops
    for op, cells in rows.items():
        for path in re.findall(r"`((?:oracle|_kernels)/[\w/]+\.(?:py|pyx))`", cells):
            assert os.path.exists(os.path.join(ROOT, "fixnet", path)), (op, path)
        if f"oracle/{op}.py" not in cells:
            assert "none" in cells, op          # an op without an oracle says so


def test_a_sibling_import_through_the_package_is_a_cycle(tmp_path):
    """`from . import arithmetic` in a module its own package's __init__ imports closes a cycle
    through that package (the form fixnet/keras/ once had)."""
    root = _copy(tmp_path)
    _add_line(root / "fixnet" / "keras" / "builder.py", "from . import arithmetic as _a")
    assert any(p.startswith("import cycle: ") and "fixnet.keras.builder" in p
               and "fixnet.keras <->" in p for p in problems(root)), problems(root)
