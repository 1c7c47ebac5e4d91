"""The one place mlcost_pl resolves paths and fsspec URLs and writes files atomically.

* :func:`get_fs` turns a local path or any fsspec URL into ``(filesystem, path)``; a protocol whose package is missing
  fails with the ``pip install`` line to run.
* :func:`is_local` answers "is this on the local disk?" for a URL, a path or a filesystem, without importing a
  remote backend.
* :func:`atomic_write_local` is the POSIX recipe (temporary name in the target folder, flush, ``fsync``, rename over
  the final name, ``fsync`` the folder); :func:`write_atomic` uses it for local targets and a single PUT (which object
  stores make visible all at once) for remote ones.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import uuid
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.local import LocalFileSystem

from mlcost_pl.errors import MissingDependencyError, MissingInputError

#: Protocols that name the local disk.
LOCAL_PROTOCOLS = ("file", "local")

_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def get_fs(url: str | os.PathLike[str], **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or any fsspec URL.

    Raises:
        ImportError: the URL's protocol needs a package that is not installed (the message names it).

    Example:
        >>> fs, path = get_fs("memory://doc/x.txt")
        >>> type(fs).__name__, path
        ('MemoryFileSystem', '/doc/x.txt')
    """
    try:
        return url_to_fs(str(url), **storage_options)
    except ImportError as err:
        proto = split_protocol(str(url))[0] or "file"
        extra = _PACKAGES.get(proto, proto)
        raise MissingDependencyError(f"{url}: the {proto}:// protocol needs `{extra}`: pip install {extra}") from err


def protocol_of(url: str | os.PathLike[str]) -> str:
    """The protocol of ``url``, lower case; ``"file"`` for a plain path.

    Example:
        >>> protocol_of("S3://bucket/x"), protocol_of("/data/x"), protocol_of("file:///tmp")
        ('s3', 'file', 'file')
    """
    proto = split_protocol(str(url))[0]
    return "file" if proto in (None, *LOCAL_PROTOCOLS) else proto.lower()


def is_local(target: str | os.PathLike[str] | fsspec.AbstractFileSystem) -> bool:
    """True when ``target`` (a path, URL or filesystem) is on the local disk.

    Example:
        >>> is_local("runs/ledger.sqlite"), is_local("file:///tmp/x"), is_local("s3://bucket/x")
        (True, True, False)
    """
    if isinstance(target, fsspec.AbstractFileSystem):
        return isinstance(target, LocalFileSystem)
    return protocol_of(target) == "file"


def local_path(url: str | os.PathLike[str]) -> str:
    """The absolute local path of a local path or ``file://`` URL.

    Raises:
        ValueError: ``url`` is not local (names it).

    Example:
        >>> local_path("file:///tmp/a.txt")
        '/tmp/a.txt'
    """
    if not is_local(url):
        raise ValueError(f"{url} is not a local path")
    path = split_protocol(str(url))[1]
    return os.path.abspath(os.path.expanduser(path))


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(staging: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished local folder ``staging`` to ``final``; a folder already at ``final`` is moved aside first and
    removed only after the new one is in place, so ``final`` is never half-written.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp(); os.makedirs(f"{root}/new")
        >>> replace_dir(f"{root}/new", f"{root}/out"); os.path.isdir(f"{root}/out")
        True
    """
    staging, final = os.fspath(staging), os.fspath(final)
    old = None
    if os.path.exists(final):
        parent, name = os.path.split(os.path.abspath(final))
        old = os.path.join(parent, f".{name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(os.path.dirname(os.path.abspath(final)))
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_local(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | str) -> int:
    """Write ``data`` to the local file ``path`` so readers see the old file or the complete new one; returns bytes.

    The bytes go to a temporary name in the same folder (created if missing), are flushed and fsynced, renamed over
    ``path``, and the folder is fsynced. On any failure the temporary file is removed and ``path`` is untouched.

    Example:
        >>> import tempfile
        >>> atomic_write_local(os.path.join(tempfile.mkdtemp(), "a", "b.txt"), "hello")
        5
    """
    payload = data.encode() if isinstance(data, str) else data
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(directory)
    return len(payload)


def write_atomic(url: str | os.PathLike[str], data: bytes | bytearray | memoryview | str,
                 storage_options: dict[str, Any] | None = None) -> int:
    """Write ``data`` to a local path or fsspec URL all-or-nothing; returns the number of bytes.

    Local targets use :func:`atomic_write_local`; remote ones one ``pipe_file`` (a single PUT, or one completed
    multipart upload, becomes visible all at once on object stores).

    Example:
        >>> write_atomic("memory://doc/atomic.txt", b"abc")
        3
    """
    payload = data.encode() if isinstance(data, str) else bytes(data)
    if is_local(url):
        return atomic_write_local(local_path(url), payload)
    fs, path = get_fs(url, **(storage_options or {}))
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        try:
            fs.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotImplementedError):
            pass
    fs.pipe_file(path, payload)
    return len(payload)


def exists(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> bool:
    """True when something exists at ``url`` (a local path or any fsspec URL)."""
    fs, path = get_fs(url, **(storage_options or {}))
    return bool(fs.exists(path))


def load_torch(url: str, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load`` from a local path or fsspec URL; a missing file raises ``FileNotFoundError`` naming it."""
    import torch

    fs, path = get_fs(url)
    if not fs.exists(path):
        raise MissingInputError(f"{url}: no such file")
    with fs.open(path, "rb") as f:
        data = f.read()
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=weights_only)
