"""What the tests that run documentation share (test_docs.py, test_docs_pi.py): a scratch folder
where a page's commands run as a reader's would in a checkout."""
import os
import shlex
import sys


def scratch_folder(d, linked, root, fixnet_dir, **env_extra):
    """Link the checkout folders ``linked`` (relative to ``root``) into folder ``d``, with
    ``fixnet`` being the package the tests imported (``fixnet_dir``: in CI the installed one),
    and return the environment whose PATH makes ``fixnet``, ``python`` and ``python3`` this
    checkout and this interpreter (``env_extra``: more variables)."""
    for name in linked:
        os.symlink(fixnet_dir if name == "fixnet" else os.path.join(root, name), d / name)
    shims = d / ".bin"
    shims.mkdir()
    # scripts, not symlinks: a link to a venv's python, called from elsewhere, is not in the venv
    py = shlex.quote(sys.executable)
    for name, line in (("fixnet", f'exec {py} -m fixnet.cli "$@"'), ("python", f'exec {py} "$@"'),
                       ("python3", f'exec {py} "$@"')):
        (shims / name).write_text(f"#!/bin/sh\n{line}\n")
        (shims / name).chmod(0o755)
    return dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
                PYTHONPATH=os.path.dirname(fixnet_dir), COLUMNS="200", **env_extra)
