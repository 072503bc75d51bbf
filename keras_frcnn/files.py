"""Files written whole or not at all: a kill or a full disk while writing leaves the previous
version (or nothing), never a torn file that a server, a runtime or ``--resume`` would read."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile


def write_atomically(path, content, partial=None):
    """Write ``content`` (a text, or a function writing the file named by its argument, e.g. a
    model's ``save``) to ``path`` under a temporary name (``partial``, default ``path.partial``) and
    rename it into place: a kill or a full disk while writing leaves the previous file (or none),
    never a torn one, and no partial file holding the space."""
    partial = partial or f"{path}.partial"
    try:
        if callable(content):
            content(partial)
        else:
            with open(partial, "w") as f:
                f.write(content)
    except OSError as error:
        remove_path(partial)
        # Keras's and Pillow's write errors name no file; others name the temporary one: the file asked for.
        if error.filename in (None, partial) and error.errno is not None:
            raise OSError(error.errno, error.strerror or str(error), path) from error
        raise
    except BaseException:
        remove_path(partial)
        raise
    os.replace(partial, path)


def remove_path(path):
    """Remove a file or a folder with its contents (nothing if it is not there)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def staging_folder(directory, name):
    """A new hidden folder ``directory/.<name>.partial-<host>-<pid>-<random>`` to write an export
    in before renaming (what is in it) into place; removed on leaving, whatever happens. Staging
    folders that killed processes of this host left in ``directory`` (an export killed with -9
    leaves up to a model's size there) are removed first."""
    host, pid = socket.gethostname(), os.getpid()
    left = re.compile(rf"^\..+\.partial-{re.escape(host)}-(\d+)-[^-]+$")
    for entry in os.listdir(directory):
        match = left.match(entry)
        if match and not _running(int(match.group(1))):
            shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.partial-{host}-{pid}-", dir=directory)
    # mkdtemp's folder is the owner's only (0700); renamed into place it must read as any folder
    # made here does (a TF Serving account other than the exporter's loads it).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _running(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
