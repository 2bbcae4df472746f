"""The one gate every file write passes through: train, resume, eval, predict, export, study and report alike.

A write is refused, before anything is created, when it would

- replace one of a run directory's own files (its record, environment, metrics, steps, summary, curves, lock,
  checkpoints or TensorBoard logs) while this process does not own the run. A process owns a run while it holds
  the run's lock (:mod:`resnets.runs.lock` calls :func:`own` and :func:`disown`), so only the training session
  of a run writes its files, and ``export --out RUN/config.json`` cannot replace the record;
- pass through a symbolic link anywhere inside a run directory (``RUN/checkpoints`` or ``RUN/exports`` made a
  link to somewhere else), or land on a link, a folder or a device where a file should be;
- replace any existing file of a run where the writer asked not to (``predict --output``).

A run directory is a folder holding a run record (``config.json``) beside a ``.lock`` or a ``checkpoints``
folder; a path lies in one when the run is among its folders as written (so ``RUN/exports/../config.json`` is the
record) or among the folders it really reaches (so a link from elsewhere into a run is seen through).

Folders are walked one at a time through directory file descriptors, each opened with ``O_NOFOLLOW`` inside a
run, so a folder swapped for a link between the check and the write cannot redirect it: the file is created
(``O_EXCL``) in the folder that was checked, filled, flushed to disk and renamed into place there. A reader
sees the old file or the new one, never half of one. A failure (a full disk, a read-only folder, an exception
while filling it) removes the temporary file and any folder this write made, leaves the old file as it was, and
is one :class:`WriteFailed` line, which is also an ``OSError``. New files get the mode a plain ``open`` gives
(0666 less the umask): run directories and reports are for sharing.

Folders are made the same way (:func:`make_folder`), and a run's own folders (``checkpoints/``,
``tensorboard/``) only by the holder of its lock. Three writes cannot be a rename into place, and take the same
walk to a descriptor of their folder instead: the run's lock (:func:`open_lock`: its ``flock`` lives on its
inode, so it is opened in place), a new file that must not replace anything (:func:`write_new`: an internal
error's traceback), and a folder handed to a writer that takes only a path (:func:`open_folder`: TensorBoard
names its event files itself, and reaches them through the folder's descriptor).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from resnets.errors import ResnetsError, RunDirError

RECORD_FILE = "config.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
#: A run's own files, written only by the process that holds its lock (see resnets.runs.directory).
RUN_FILES = frozenset(
    {RECORD_FILE, "env.json", "metrics.jsonl", "metrics.csv", "steps.csv", "summary.json", "curves.png", LOCK_FILE}
)
#: A run's own folders: everything under them belongs to the run.
RUN_FOLDERS = frozenset({CHECKPOINTS, "tensorboard"})

#: (st_dev, st_ino) of the run directories whose lock this process holds.
_OWNED: set[tuple[int, int]] = set()
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class WriteRefused(RunDirError):
    """A write that would replace a run's own files, pass through a link, or land on something not a file."""


class WriteFailed(ResnetsError, OSError):
    """The system refused a write (no space left, no permission); nothing half-written was left behind."""

    def __init__(self, path: str | Path, error: OSError) -> None:
        OSError.__init__(self, error.errno, error.strerror or str(error))
        self.message = f"cannot write {str(path)!r}: {error.strerror or error}"

    def __str__(self) -> str:
        return self.message


def own(run_dir: str | Path) -> None:
    """This process now owns ``run_dir`` (it holds its lock): its own files may be written."""
    _OWNED.add(_identity(os.stat(run_dir)))


def disown(run_dir: str | Path) -> None:
    with contextlib.suppress(OSError):
        _OWNED.discard(_identity(os.stat(run_dir)))


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a run directory in the guard's sense (see the module docstring); links followed."""
    path = Path(path)
    return (path / RECORD_FILE).is_file() and ((path / LOCK_FILE).exists() or (path / CHECKPOINTS).is_dir())


def run_folder_of(path: str | Path) -> Path | None:
    """The run directory that ``path`` is or lies in, by its folders as written or as they really are."""
    absolute = Path(os.path.abspath(path))
    return _nearest_run(absolute) or _nearest_run(Path(os.path.realpath(absolute)))


def write(path: str | Path, content: bytes | Callable[[str], None], *, replace_in_run: bool = True) -> None:
    """Write ``content`` (bytes, or ``fill(tmp_path)`` that writes the file) to ``path`` atomically, if allowed.

    ``replace_in_run=False`` also refuses replacing any existing file of a run directory. See the module
    docstring for what is refused; an OSError on the way is a :class:`WriteFailed`.
    """
    path = Path(path)
    with _folder_for(path, create=True) as folder:
        folder.write(path.name, content, replace_in_run=replace_in_run)


def check(path: str | Path, *, replace_in_run: bool = True) -> None:
    """Refuse now what :func:`write` would refuse, without creating anything: a refused output costs no work."""
    path = Path(path)
    with _folder_for(path, create=False) as folder:  # a folder still to be made holds no file: only the name counts
        folder.allowed(path.name, replace_in_run=replace_in_run)


def make_folder(path: str | Path) -> None:
    """Create ``path`` and its missing parents, refusing links inside a run directory as :func:`write` does, and
    a run's own folders unless this process holds its lock. Nothing is made when it refuses."""
    with _run_folder(Path(path), create=True):
        pass


def check_folder(path: str | Path) -> None:
    """Refuse now what :func:`make_folder` (and writing into the folder) would refuse, creating nothing."""
    with _run_folder(Path(path), create=False):
        pass


def make_new_folder(path: str | Path) -> None:
    """Create the folder ``path``, which must not exist yet (a FileExistsError), in its parent made as
    :func:`make_folder` makes it: two processes asking for the same new folder never both get it."""
    path = Path(path)
    _check_name(path.parent, path.name)
    with _run_folder(path.parent, create=True) as parent:
        parent._not_the_runs(path.name)
        try:
            os.mkdir(path.name, 0o777, dir_fd=parent.fd)
        except FileExistsError:
            raise
        except OSError as error:
            raise WriteFailed(path, error) from None


def open_folder(path: str | Path) -> tuple[int, str]:
    """Make ``path`` as :func:`make_folder` does and keep it open, for a writer that takes only a folder's path.

    Returns the folder's descriptor (the caller closes it) and a path that names that very folder through the
    descriptor (``/proc/self/fd/N`` on Linux; elsewhere ``path`` itself): files opened under it are created in
    the folder that was checked, whatever is later renamed or linked in its place.
    """
    with _run_folder(Path(path), create=True) as opened:
        assert opened.fd is not None
        handle = os.dup(opened.fd)
    return handle, _fd_path(handle) or str(path)


def open_lock(run_dir: str | Path) -> tuple[int, bool]:
    """Open ``RUN/.lock`` for reading and writing in place, made if missing: its descriptor (the caller closes it)
    and whether this call created it.

    The lock is the one file of a run not renamed into place: its ``flock`` lives on its inode, so every writer
    must open the same file. The run folder is reached by the checked walk and the file opened with
    ``O_NOFOLLOW``, so a lock that is a link, or a linked folder on the way inside a run, is refused. Taking the
    lock is how a process comes to own a run, so ownership is not asked for here.
    """
    target = Path(run_dir) / LOCK_FILE
    with _folder(Path(run_dir), create=False, target=target) as opened:
        if opened.fd is None:
            raise WriteFailed(target, FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
        opened.regular_or_absent(LOCK_FILE)
        flags = os.O_RDWR | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            try:  # 0644 as before: only the holder describes itself in the lock
                return os.open(LOCK_FILE, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=opened.fd), True
            except FileExistsError:
                return os.open(LOCK_FILE, flags, dir_fd=opened.fd), False
        except OSError as error:
            raise WriteFailed(target, error) from None


def write_new(path: str | Path, content: bytes, *, mode: int = 0o666) -> None:
    """Create ``path`` as a new file and fill it, through the same walk and checks as :func:`write`; a failure
    removes it. Anything already there (a file, a link, a folder) is a WriteFailed with ``errno`` EEXIST: the
    file is created with ``O_EXCL``, so nothing is replaced or followed."""
    path = Path(path)
    with _folder_for(path, create=True) as folder:
        folder._not_the_runs(path.name)
        folder.fill(path.name, content, shown=path.name, mode=mode)
        with folder.removed_on_failure(path.name, shown=path.name):
            folder.sync()


@contextlib.contextmanager
def folder(path: str | Path, *, create: bool = True) -> Iterator[Folder]:
    """The folder ``path`` reached through the guard, for several operations in it (the checkpoint commit)."""
    with _folder(Path(path), create=create) as opened:
        yield opened


@dataclass
class Folder:
    """An open folder reached through the guard: its descriptor, where it is, and the run it lies in."""

    path: Path  # as the caller named it, for messages
    fd: int | None  # None only for a check of a folder that does not exist yet
    runs: list[tuple[Path, tuple[str, ...]]]  # (run directory, this folder's parts inside it), as written and real
    made: list[tuple[int, str]] = field(default_factory=list)  # (parent fd, name) of folders this write made

    def allowed(self, name: str, *, replace_in_run: bool = True) -> bool:
        """Refuse writing ``name`` here (see the module docstring); True when it exists as a regular file."""
        self._not_the_runs(name)
        exists = self.regular_or_absent(name)
        if exists and not replace_in_run and self.runs:
            raise WriteRefused(
                f"{str(self.path / name)!r} is a file of the run directory {str(self.runs[0][0])!r}; a run's files "
                "are not overwritten: give a new name or a path outside the run"
            )
        return exists

    def regular_or_absent(self, name: str) -> bool:
        """Refuse ``name`` here when it is a link, a folder or a device; True when it exists as a regular file."""
        mode = self.mode(name)
        if mode is not None and not stat.S_ISREG(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or pipe"
            raise WriteRefused(
                f"{str(self.path / name)!r} is not a regular file ({kind}); files are written only as regular files, "
                "never through links: remove it or choose another path"
            )
        return mode is not None

    def not_a_run_folder(self) -> None:
        """Refuse this folder when it is, or lies in, a run's own folder or file name and this process does not
        hold the run's lock: folders made there would be the run's (``checkpoints/``, ``tensorboard/``)."""
        for run, parts in self.runs:
            if parts and parts[0] in RUN_FOLDERS | RUN_FILES and not _owns(run):
                raise WriteRefused(
                    f"{str(self.path)!r} is in the run directory {str(run)!r} where only its training writes (its "
                    "checkpoints, logs and records); choose a folder outside them"
                )

    def _not_the_runs(self, name: str) -> None:
        """Refuse a bad name, or one of a run's own files when this process does not hold the run's lock."""
        _check_name(self.path, name)
        for run, parts in self.runs:
            inside = (*parts, name)
            if (inside[0] in RUN_FOLDERS or (len(inside) == 1 and name in RUN_FILES)) and not _owns(run):
                raise WriteRefused(
                    f"{str(self.path / name)!r} is a file of the run directory {str(run)!r} that only its training "
                    "writes (its record, metrics, logs or checkpoints); choose a path outside them"
                )

    def mode(self, name: str) -> int | None:
        """The mode of ``name`` here without following a link; None when it does not exist."""
        if self.fd is None:
            return None
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return None

    def write(
        self, name: str, content: bytes | Callable[[str], None], *, replace_in_run: bool = True, atomic: bool = True
    ) -> None:
        """Write ``name`` here: through a temporary file renamed into place, or (``atomic=False``, for a file that
        is itself a temporary name, such as a staged checkpoint) created afresh under its own name."""
        if not atomic:
            self.unlink(name)  # a temporary name of ours: whatever was left under it (even a link) is debris
        self.allowed(name, replace_in_run=replace_in_run)
        temporary = f".{name}.{secrets.token_hex(4)}.tmp" if atomic else name
        self.fill(temporary, content, shown=name)
        with self.removed_on_failure(temporary, shown=name):
            if atomic:
                os.replace(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            self.sync()

    def fill(self, name: str, content: bytes | Callable[[str], None], *, shown: str, mode: int = 0o666) -> None:
        """Create ``name`` here (``O_EXCL``, never through a link), fill it and flush it to disk; a failure removes
        it and is a WriteFailed naming ``shown``. Checks are the caller's (:meth:`allowed`)."""
        assert self.fd is not None
        try:
            handle = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode, dir_fd=self.fd)
        except OSError as error:
            raise WriteFailed(self.path / shown, error) from None
        with self.removed_on_failure(name, shown=shown):
            try:
                if isinstance(content, (bytes, bytearray, memoryview)):
                    _write_all(handle, bytes(content))
                else:
                    content(_fd_path(handle) or str(self.path / name))
                os.fsync(handle)
                if not _same_file(os.fstat(handle), self.mode_stat(name)):
                    raise OSError(errno.EBUSY, "the temporary file was replaced while it was written")
            finally:
                os.close(handle)

    @contextlib.contextmanager
    def removed_on_failure(self, name: str, *, shown: str) -> Iterator[None]:
        """Remove ``name`` here when the block fails; the system's refusal (an OSError) becomes a WriteFailed
        naming ``shown``, and anything else goes on as it was."""
        try:
            yield
        except BaseException as error:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.fd)
            if isinstance(error, OSError) and not isinstance(error, ResnetsError):
                raise WriteFailed(self.path / shown, error) from None
            raise

    def mode_stat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def replace(self, source: str, target: str) -> None:
        """Rename ``source`` onto ``target`` inside this folder (both checked as writes)."""
        self.allowed(source)
        self.allowed(target)
        try:
            os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as error:
            raise WriteFailed(self.path / target, error) from None

    def unlink(self, name: str) -> None:
        """Remove ``name`` here if it exists (a link is removed, never followed); checked as a write."""
        self._not_the_runs(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise WriteFailed(self.path / name, error) from None

    def sync(self) -> None:
        """Make the renames in this folder durable (POSIX); a no-op where folders cannot be synced."""
        with contextlib.suppress(OSError):
            os.fsync(self.fd)


def _write_all(handle: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def _fd_path(handle: int) -> str | None:
    """A path naming the open file itself (Linux), so a path-taking writer fills exactly the file created."""
    path = f"/proc/self/fd/{handle}"
    return path if os.path.exists(path) else None


def _same_file(a: os.stat_result, b: os.stat_result | None) -> bool:
    return b is not None and _identity(a) == _identity(b)


def _identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _owns(run: Path) -> bool:
    try:
        return _identity(os.stat(run)) in _OWNED
    except OSError:
        return False


def _check_name(folder: Path, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise WriteRefused(f"{name!r} in {str(folder)!r} is not a file name")


def _nearest_run(path: Path) -> Path | None:
    return next((p for p in (path, *path.parents) if is_run_folder(p)), None)


@contextlib.contextmanager
def _run_folder(path: Path, *, create: bool) -> Iterator[Folder]:
    """:func:`_folder` for a folder of its own (not a file's parent): a run's own folders are refused before
    anything is made, by the path as written and as it really is, and again once it is open."""
    with _folder(path, create=False) as found:
        found.not_a_run_folder()
        if not create:
            yield found
            return
    with _folder(path, create=True) as opened:
        opened.not_a_run_folder()  # a folder made meanwhile, or a link on the way: what is made here goes again
        yield opened


@contextlib.contextmanager
def _folder_for(path: Path, *, create: bool) -> Iterator[Folder]:
    _check_name(path.parent, path.name)
    with _folder(Path(os.path.abspath(path)).parent, create=create, target=path, shown=path.parent) as opened:
        yield opened


@contextlib.contextmanager
def _folder(path: Path, *, create: bool, target: Path | None = None, shown: Path | None = None) -> Iterator[Folder]:
    """Open ``path`` one folder at a time (see the module docstring); folders this made go again on failure.

    ``target`` is the file that will be written there, named in errors (else the folder); ``shown`` names the
    folder as the caller gave it.
    """
    absolute = Path(os.path.abspath(path))
    target = path if target is None else target
    run = _nearest_run(absolute)
    if run is not None:  # the run itself may be reached through the user's links; nothing inside it may be a link
        anchor, rest = run, absolute.relative_to(run).parts
    else:
        anchor = next((p for p in (absolute, *absolute.parents) if p.is_dir()), Path(absolute.anchor))
        rest = absolute.relative_to(anchor).parts
    opened = Folder(path if shown is None else shown, None, [])
    try:
        fd: int | None = os.open(anchor, _FOLDER_FLAGS)
    except OSError as error:
        raise WriteFailed(target, error) from None
    walked = anchor
    try:
        for part in rest:
            walked = walked / part
            try:
                inner = os.open(part, _FOLDER_FLAGS | _NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    fd = None
                    break
                _make(fd, part, target, opened)
                inner = os.open(part, _FOLDER_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as error:
                raise _not_a_folder(fd, part, walked, target, run, error) from None
            os.close(fd)
            fd = inner
        opened.fd, fd = fd, None
        opened.runs = _runs_of(absolute, opened.fd, run)
        if not create and opened.fd is not None and not os.access(_fd_path(opened.fd) or absolute, os.W_OK):
            raise WriteFailed(target, PermissionError(errno.EACCES, "Permission denied"))
        yield opened
    except BaseException:
        for parent, name in reversed(opened.made):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=parent)
        raise
    finally:
        for handle in [fd, opened.fd, *(parent for parent, _ in opened.made)]:
            if handle is not None:
                with contextlib.suppress(OSError):
                    os.close(handle)


def _make(fd: int, part: str, target: Path, opened: Folder) -> None:
    try:
        os.mkdir(part, 0o777, dir_fd=fd)
    except FileExistsError:
        return  # made meanwhile by someone else: opened below without following a link, like any other
    except OSError as error:
        raise WriteFailed(target, error) from None
    opened.made.append((os.dup(fd), part))


def _not_a_folder(fd: int, part: str, walked: Path, target: Path, run: Path | None, error: OSError) -> ResnetsError:
    try:
        mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
    except OSError:
        return WriteFailed(target, error)
    if stat.S_ISLNK(mode) and run is None:
        return WriteRefused(f"{str(walked)!r}, on the way to {str(target)!r}, is a symlink to no folder")
    if stat.S_ISLNK(mode):
        return WriteRefused(
            f"{str(walked)!r}, on the way to {str(target)!r}, is a symlink inside the run directory "
            f"{str(run)!r}; nothing is written through links out of a run: replace the link by a folder, or choose "
            "another path"
        )
    if not stat.S_ISDIR(mode):
        return WriteRefused(f"{str(walked)!r}, on the way to {str(target)!r}, is a file, not a folder")
    return WriteFailed(target, error)


def _runs_of(absolute: Path, fd: int | None, written: Path | None) -> list[tuple[Path, tuple[str, ...]]]:
    """The run directories this folder lies in: by its path as written, and by where it really is."""
    runs = []
    if written is not None:
        runs.append((written, absolute.relative_to(written).parts))
    real = Path(os.readlink(_fd_path(fd))) if fd is not None and _fd_path(fd) else Path(os.path.realpath(absolute))
    found = _nearest_run(real)
    if found is not None and not (written is not None and os.path.samefile(found, written)):
        runs.append((found, real.relative_to(found).parts))
    return runs
