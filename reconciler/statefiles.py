"""Opening files in a state directory: never through a symbolic link, and only regular files.

A state directory is committed to git, so a merged pull request can plant a link at a state file's name (to a file
the next command would truncate, append to, or read as the key), a FIFO (an open that never returns) or a
directory. Every open of a state file — snapshot, journal, backup, lock, key file, passphrase salt, credentials
records and their stripe locks, the service's attempts and audit log — goes through `open_regular`/`read_regular`,
and every file replaced by rename is checked with `check_replaceable` first; a credentials directory must be a real
directory (`check_directory`).

Owns: those checks and their one message (the file, what it is, and that it was not changed), and the atomic
replacement of a state file (`atomic_write`: temp file, fsync, rename, directory fsync).
Must not: follow a link at a state file's name, create a file through one, or block on a special file. The state
directory itself may be a link (it is named by the configuration, which could point anywhere just as well).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from reconciler.errors import StateError

__all__ = [
    "NotARegularFileError",
    "atomic_write",
    "check_directory",
    "check_replaceable",
    "open_regular",
    "read_regular",
]

_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: opening a FIFO returns at once
_LINK_ERRNOS = {errno.ELOOP, errno.EMLINK}  # what O_NOFOLLOW reports for a link (EMLINK on FreeBSD)
_CHUNK = 1 << 20


class NotARegularFileError(StateError):
    """A state file's name holds a link, a FIFO, a directory or another special file: nothing was done with it."""

    def __init__(self, path: Path | str, found: str, *, expected: str = "a regular file") -> None:
        super().__init__(
            f"{path}: is {found}, not {expected}; it was not changed (nor anything it points to)",
            hint="a state directory holds no links or special files: remove it (and check how it got there), then "
            "run again",
        )


def _what(path: Path | str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "not a regular file"
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def open_regular(path: Path | str, flags: int, mode: int = 0o600) -> int:
    """`os.open` that refuses (NotARegularFileError) a link at `path`, and anything but a regular file there;
    FileNotFoundError as usual when it is missing and `flags` does not create it."""
    fd, _ = _open_checked(path, flags, mode)
    try:
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_checked(path: Path | str, flags: int, mode: int = 0o600) -> tuple[int, os.stat_result]:
    """The descriptor of the regular file at `path` (still non-blocking) and its status."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno in _LINK_ERRNOS or exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV):
            raise NotARegularFileError(path, _what(path)) from None
        raise
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise NotARegularFileError(path, _what(path))
    except BaseException:
        os.close(fd)
        raise
    return fd, status


def read_regular(path: Path | str) -> bytes | None:
    """The bytes of the regular file at `path`, None when there is none; refuses a link or special file."""
    try:
        fd, status = _open_checked(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        # Read straight from the descriptor, as few calls as it takes (`status` reads one credential record per
        # installation): the size known, then on to the end, should the file have grown meanwhile. O_NONBLOCK
        # does not change how a regular file reads.
        parts = [os.read(fd, status.st_size + 1)]
        while parts[-1]:
            parts.append(os.read(fd, _CHUNK))
        return b"".join(parts)
    finally:
        os.close(fd)


def check_replaceable(path: Path | str) -> None:
    """Before replacing `path` by rename: it is absent or a regular file (a link there is refused, not replaced)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotARegularFileError(path, _what(path))


def check_directory(path: Path | str) -> None:
    """`path` is absent or a real directory (a link to one is refused: records would be written elsewhere)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise NotARegularFileError(path, _what(path), expected="a directory")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new bytes, never a mix. A link or special
    file at `path` is refused (`NotARegularFileError`), not replaced."""
    check_replaceable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
