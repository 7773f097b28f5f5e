"""A folder on this machine's file system: the Directory port of the file sink (connectors/sinks/files.py). Every
file is fsynced before its rename and the folder after it, so a rename that survived a crash names complete data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from broker.errors import ServiceError

_CHUNK = 1 << 20


class LocalDirectory:
    """One folder, created (with its parents) when first listed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def names(self) -> list[str]:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            return sorted(os.listdir(self.path))
        except OSError as exc:
            raise self._failed("list", self.path, exc) from exc

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise self._failed("read", self.path / name, exc) from exc

    def create(self, name: str) -> BinaryIO:
        try:
            return (self.path / name).open("wb")
        except OSError as exc:
            raise self._failed("create", self.path / name, exc) from exc

    def publish(self, file: BinaryIO, temporary: str, name: str) -> tuple[str, int]:
        try:
            with file:
                file.flush()
                os.fsync(file.fileno())
            digest, size = _sha256(self.path / temporary)
            os.replace(self.path / temporary, self.path / name)
            self._sync_folder()
        except OSError as exc:
            raise self._failed("write", self.path / name, exc) from exc
        return digest, size

    def write_atomically(self, name: str, data: bytes, temporary: str) -> None:
        try:
            with (self.path / temporary).open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(self.path / temporary, self.path / name)
            self._sync_folder()
        except OSError as exc:
            raise self._failed("write", self.path / name, exc) from exc

    def remove(self, name: str) -> None:
        try:
            (self.path / name).unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed("remove", self.path / name, exc) from exc

    def _sync_folder(self) -> None:
        # The rename itself is durable only once the folder's entry is on disk.
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _failed(what: str, path: Path, exc: OSError) -> ServiceError:
        return ServiceError(f"cannot {what} {path}: {exc.strerror or exc} (errno {exc.errno})")


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as data:
        while chunk := data.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
