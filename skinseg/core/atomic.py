"""Write files through a temporary name and a rename, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import os
import shutil


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path` (same name after a hidden prefix, so suffix-sensitive
    writers such as `model.save(".keras")` accept it); rename it onto `path` on success."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}")
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as handle:  # the rename must not overtake the data on disk
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise _naming(err, path) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _naming(err: OSError, path: str) -> OSError:
    """The same failure, naming the file the user asked for (not its temporary, nor nothing:
    writers such as HDF5 and zipfile often name no file)."""
    code = err.errno
    if code is None and "errno = 28" in str(err) or "No space left" in str(err):
        code = 28
    return OSError(code, err.strerror or str(err), path)


def write_text(path: str, text: str) -> None:
    # A file name that is not valid UTF-8 (a surrogate escape in `text`) is written escaped, not
    # refused: reports stay readable; JSON files escape it losslessly anyway.
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", errors="backslashreplace") as handle:
        handle.write(text)


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def pid_alive(pid: int) -> bool:
    """Whether a process with this ID exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else (or the platform cannot tell: keep its files)
    return True


def remove_stale_staging(folder: str, prefix: str) -> list[str]:
    """Staging folders `<prefix><pid>-...` in `folder` whose process is gone (a killed run's):
    removed, so that the next run of the same command cleans up after it. Returns their paths."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
            removed.append(os.path.join(folder, name))
    return removed
