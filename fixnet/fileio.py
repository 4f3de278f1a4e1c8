"""Writing a file so that a failure never leaves it half-written: what `qm.save` and the
command line's outputs (.npy/.npz, the HTML report, JSON results) go through."""
import os
import secrets

from .errors import FixnetError


def write_atomically(path, data, error=FixnetError, action="write the file"):
    """Write ``data`` (bytes) to ``path``: into a temporary file next to it, flushed to disk,
    then renamed over it, so an interrupted or failed write leaves no partial file and an
    existing file stays as it was. A symbolic link is followed (the file it points to is
    replaced, not the link). Raises ``error`` ("PATH: cannot ACTION: reason") on an OSError."""
    path = os.fspath(path)
    if os.path.islink(path):
        path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    try:
        # os.open with 0o666 lets the umask decide the final permissions, as open() would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise error(f"{path}: cannot {action}: {e.strerror or e}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise error(f"{path}: cannot {action}: {e.strerror or e}") from e
        raise
    try:            # make the rename itself durable (best effort; not possible everywhere)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
