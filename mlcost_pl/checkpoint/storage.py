"""Atomic writes to a local directory or any fsspec URL.

Local filesystems get the POSIX recipe: write to a temporary name *in the target directory*, flush, ``fsync``, rename
over the final name, ``fsync`` the directory. Object stores (``s3://``, ``gs://``, ``memory://``) make a single PUT
visible atomically, so a plain write is already all-or-nothing per object; a checkpoint made of several objects is
committed by writing its manifest last (see :mod:`mlcost_pl.checkpoint.manifest`).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.utils.fs import atomic_write_local, fsync_dir, get_fs, is_local


class CheckpointDirError(UserInputError):
    """A checkpoint directory cannot be reached or written (the message names the URL and the cause)."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"


class CheckpointStorage:
    """A checkpoint directory on a local path or an fsspec URL, with atomic writes.

    Args:
        url: a local path, ``file://``, ``memory://``, ``s3://``, ``gs://`` ... URL of the directory.
        storage_options: passed to fsspec (e.g. ``{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}``).

    Example:
        >>> store = CheckpointStorage("memory://doc-example/ckpts")
        >>> store.write_atomic("a/b.txt", b"hello")
        5
        >>> store.read("a/b.txt")
        b'hello'
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        if not isinstance(url, (str, os.PathLike)) or not str(url).strip():
            raise UserInputError(f"dirpath must be a non-empty path or URL, got {url!r}")
        self.storage_options = dict(storage_options or {})
        self.fs, path = get_fs(str(url), **self.storage_options)
        self.is_local = is_local(self.fs)
        self.root = path.rstrip("/") if path not in ("/", "") else path
        if self.is_local:
            self.root = os.path.abspath(os.path.expanduser(self.root))
            self.url = self.root
        else:
            self.url = self.fs.unstrip_protocol(self.root)

    # ------------------------------------------------------------------ paths
    def path(self, rel: str) -> str:
        """The filesystem path (no protocol) of ``rel`` inside the directory."""
        return f"{self.root}/{rel}" if rel else self.root

    def url_of(self, rel: str) -> str:
        """The user-facing URL (local path or ``proto://...``) of ``rel`` inside the directory."""
        return self.path(rel) if self.is_local else self.fs.unstrip_protocol(self.path(rel))

    # ------------------------------------------------------------------ checks
    def check_writable(self) -> None:
        """Create the directory and write, read back and delete a probe object.

        Raises:
            CheckpointDirError: one line naming the URL and the cause.
        """
        probe = f".probe-{uuid.uuid4().hex}"
        try:
            self.makedirs("")
            self.write_atomic(probe, b"ok")
            if self.read(probe) != b"ok":
                raise OSError("a probe object read back different bytes")
            self.fs.rm(self.path(probe))
        except Exception as err:  # noqa: BLE001 - any failure means the directory is unusable
            raise CheckpointDirError(f"checkpoint dirpath {self.url} is not writable: {_one_line(err)}") from err

    # ------------------------------------------------------------------ io
    def makedirs(self, rel: str) -> None:
        """Create ``rel`` (and parents); a no-op on object stores without directories."""
        if self.is_local:
            os.makedirs(self.path(rel), exist_ok=True)
        else:
            try:
                self.fs.makedirs(self.path(rel), exist_ok=True)
            except (FileExistsError, NotImplementedError):
                pass

    def write_atomic(self, rel: str, data: bytes | memoryview) -> int:
        """Write ``data`` to ``rel`` so readers see either the old object or the complete new one; returns bytes."""
        target = self.path(rel)
        if self.is_local:
            return atomic_write_local(target, data)
        # One PUT (or one completed multipart upload) becomes visible all at once.
        self.fs.pipe_file(target, bytes(data))
        return len(data)

    def read(self, rel: str) -> bytes:
        """The bytes of ``rel``; ``FileNotFoundError`` if it is absent."""
        return self.fs.cat_file(self.path(rel))

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def listdir(self, rel: str = "") -> list[str]:
        """Names (not paths) of the entries directly under ``rel``; ``[]`` if it does not exist."""
        try:
            self.fs.invalidate_cache(self.path(rel))
        except Exception:  # noqa: BLE001 - not every fs caches listings
            pass
        try:
            entries = self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

    def remove_tree(self, rel: str) -> None:
        """Delete ``rel`` and everything under it (missing is fine)."""
        try:
            self.fs.rm(self.path(rel), recursive=True)
        except FileNotFoundError:
            pass
        if self.is_local:
            fsync_dir(os.path.dirname(self.path(rel)))

    def remove(self, rel: str) -> None:
        """Delete one object (missing is fine)."""
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

