"""Files: atomic writes, output paths checked before any work, paths confined to a folder.

A leaf module (it imports only :mod:`latlab.errors`), so every part uses the same three rules:

- :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_with` write
  through a temporary file in the target folder and a rename, so a reader or a crash never
  sees half a file, and give the file the ordinary mode (``0666 & ~umask``, 0644 under the
  usual umask: ``mkstemp`` alone would leave it private, 0600, unlike everything else latlab
  writes);
- :func:`prepare_output` checks an output path *before* a command does any work (a path that
  is a folder, whose parent is a file, or that cannot be written is refused); missing parent
  folders are created by the writers when they write (:func:`make_parent`), as ``mkdir -p``
  and most tools do, so a failed command leaves no empty folder behind;
- :func:`inside` joins a relative name that a file (a bundle manifest, a saved predictor)
  names to the folder that file belongs to, refusing absolute paths, ``..`` and symlinks
  that leave the folder: a saved file can never make latlab read elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from latlab.errors import BundleError, PathError


def file_mode() -> int:
    """The mode of an ordinary new file under the current umask (0644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it there.

    For writers that want a file name (``DataFrame.to_csv``, ``savefig``, ``np.savez``). An
    existing file is replaced only once the new one is complete; on any error the temporary
    file is removed and ``path`` is untouched. Missing parent folders are created.
    """
    p = Path(path)
    folder = make_parent(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_with`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write_with(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def prepare_output(
    path: str | os.PathLike[str], what: str = "output", *, folder: bool = False
) -> Path:
    """Check, before any work, that ``path`` can be written; returns it (``~`` expanded).

    Missing parent folders are fine: the writers here create them when they write (as
    ``mkdir -p``, git and most tools do), so nothing is created before the work succeeds.
    Refused with :class:`PathError` naming ``what`` (the flag, e.g. ``--out``) and the path:
    ``folder=True`` outputs (a bundle, a report folder) where a file of that name exists,
    file outputs where a folder exists, a parent that is a file, an unwritable folder.
    """
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise PathError(f"{what} {p} is a file, not a folder")
    if not folder and p.is_dir():
        raise PathError(f"{what} {p} is a folder (expected a file name)")
    parent = p.parent if str(p.parent) else Path(".")
    for up in (parent, *parent.parents):
        if up.exists():
            if not up.is_dir():
                raise PathError(f"{what} {p}: {up} is a file, not a folder")
            if not os.access(up, os.W_OK | os.X_OK):
                raise PathError(f"{what} {p}: folder {up} is not writable")
            break
    return p


def make_parent(path: str | os.PathLike[str]) -> Path:
    """Create the missing parent folders of ``path`` (what a writer does just before writing)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PathError(f"cannot write {p}: {parent} is not a folder") from None
    except OSError as exc:
        raise PathError(f"cannot write {p}: cannot create {parent} ({exc.strerror})") from None
    return parent


def inside(root: str | os.PathLike[str], name: object, what: str = "file") -> Path:
    """``root / name`` where ``name`` is a relative path that stays inside ``root``.

    Refuses (:class:`BundleError`) a name that is not a string, is empty, absolute, contains
    ``..`` or a backslash-separated escape, or resolves (through symlinks) outside ``root``.
    The message names ``name`` as written, never the file it would point at.
    """
    if not isinstance(name, str) or not name.strip():
        raise BundleError(f"{what} name {name!r} is not a relative path")
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or ".." in pure.parts:
        raise BundleError(f"{what} {name!r} points outside its folder (absolute or '..')")
    if os.path.splitdrive(name)[0]:
        raise BundleError(f"{what} {name!r} points outside its folder (a drive)")
    base = Path(root)
    target = base.joinpath(*pure.parts)
    real_base = os.path.realpath(base)
    real = os.path.realpath(target)
    if os.path.commonpath([real_base, real]) != real_base:
        raise BundleError(f"{what} {name!r} points outside its folder (a link leaving it)")
    return target
