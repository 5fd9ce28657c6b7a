"""Where ddmkit may write: one run per output path, only into folders it owns, never onto an input.

    with output_lock(out):                 # a second run on the same path exits 2 at once
        ...
    check_target(out, kind="folder")       # not a file, its parent a writable folder (before any work)
    claim_folder(out, owned=is_sample_folder, overwrite=args.overwrite, inputs=[model_path])

Locks are `flock`s on a small file in ddmkit's cache folder (`$XDG_CACHE_HOME/ddmkit/locks/`, keyed by
the output's absolute path), so nothing is written beside the user's files and a killed run (even by
kill -9) leaves no stale lock: the kernel drops a dead process's locks. A folder is ddmkit's own when
it holds ddmkit's manifest or state file (`owned(folder)`); anything else is written into only with
`--overwrite`, which is refused where the output is an input of the same command.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .cache import user_cache_base
from .errors import DdmkitError

LOCK_DIR_NAME = "locks"


def _lock_dir() -> Path:
    d = user_cache_base() / "ddmkit" / LOCK_DIR_NAME
    try:
        d.mkdir(parents=True, exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    d = Path(tempfile.gettempdir()) / f"ddmkit-{os.getuid()}" / LOCK_DIR_NAME
    d.mkdir(parents=True, exist_ok=True)
    return d


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output path (the same for every spelling of that path)."""
    key = os.path.realpath(os.path.abspath(os.fspath(path)))
    return _lock_dir() / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the length of the block; DdmkitError at once if another
    process holds it."""
    lp = lock_path(path)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DdmkitError(f"another ddmkit run is writing to {path}; wait for it to finish (or stop it), "
                                  "or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {os.path.abspath(os.fspath(path))}\n".encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def check_target(path: str | os.PathLike, kind: str = "folder", option: str = "--out") -> Path:
    """Refuse an output path that cannot be written: empty, of the wrong kind, under a file, or on a
    read-only or non-writable folder. Nothing is created."""
    text = os.fspath(path)
    if not text.strip():
        raise DdmkitError(f"{option} is empty; give a {kind} path")
    p = Path(text).expanduser()
    if p.exists():
        if kind == "folder" and not p.is_dir():
            raise DdmkitError(f"{option} {p} is a file, not a folder; choose another {option}")
        if kind == "file" and p.is_dir():
            raise DdmkitError(f"{option} {p} is a folder; give a file name for {option}")
    parent = p if (kind == "folder" and p.is_dir()) else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise DdmkitError(f"{option} {p}: {parent} is a file, so nothing can be written below it; choose another {option}")
    if not _writable(parent):
        raise DdmkitError(f"{option} {p}: the folder {parent} is not writable (read-only or no permission); "
                          f"choose another {option}")
    return p


def _writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` (a read-only mount, missing permission, or a pseudo
    filesystem says no): checked by creating and removing an empty hidden file, since root passes
    every permission test."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK | os.X_OK):
            return False
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".ddmkit-write-probe.")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def _same_or_inside(inner: Path, outer: Path) -> bool:
    a, b = os.path.realpath(inner), os.path.realpath(outer)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def refuse_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None]) -> None:
    """An output that is an input of the same command, or a folder that holds one, is refused
    (with or without --overwrite)."""
    ins = [Path(i) for i in inputs if i]
    for out in outputs:
        o = Path(out)
        for i in ins:
            if _same_or_inside(i, o):
                raise DdmkitError(f"the output {o} would overwrite the input {i} of the same command; "
                                  "choose another --out")


def claim_folder(out: str | os.PathLike, owned: Callable[[Path], bool], *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out") -> Path:
    """Check that ddmkit may write into the folder `out`: it does not exist, is empty, or is ddmkit's
    own (`owned(out)`); any other folder needs `overwrite`. Writes nothing."""
    p = check_target(out, "folder", option)
    refuse_inputs([p], inputs)
    if p.is_dir() and any(p.iterdir()) and not owned(p) and not overwrite:
        raise DdmkitError(f"{p} holds files that ddmkit did not write; choose an empty or new {option}, "
                          "or add --overwrite to write into it")
    return p


def claim_files(paths: Iterable[str | os.PathLike], *, overwrite: bool = False,
                inputs: Iterable[str | os.PathLike | None] = (), option: str = "--out",
                owned: Callable[[Path], bool] | None = None) -> list[Path]:
    """Check that ddmkit may write each file of `paths`: absent, ddmkit's own (`owned(path)`), or
    `overwrite`. Writes nothing."""
    out = [check_target(p, "file", option) for p in paths]
    refuse_inputs(out, inputs)
    for p in out:
        if p.exists() and not overwrite and not (owned is not None and owned(p)):
            raise DdmkitError(f"{p} exists; choose another {option}, or add --overwrite to replace it")
    return out


def json_file_says(path: Path, **expected: object) -> bool:
    """True when `path` is a JSON object whose keys have the expected values (None: key present)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(obj, dict):
        return False
    return all((k in obj) if v is None else obj.get(k) == v for k, v in expected.items())
