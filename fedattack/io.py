"""Atomic file writes: an interrupted run never leaves a half-written file a reader would trust."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode() -> int:
    """The mode open() gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (POSIX only; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Held by every atomic write of this process, and for good by `freeze_writes`: a process that
# ends at once on a signal writes its last word (run.json) and then nothing else.
_WRITING = threading.RLock()


def write_atomic(path: str | Path, data: str | bytes, *, tmp_prefix: str | None = None) -> None:
    """The project's one atomic file writer: write to a temporary file in the same folder (named
    ``tmp_prefix`` + name + random, by default ``.name.*.tmp``), fsync it, rename it over ``path``
    and fsync the folder, so that after a crash ``path`` holds the old or the new bytes, never a
    mix, and the rename itself survives a power cut."""
    path = Path(path)
    with _WRITING:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp_prefix is None:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        else:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{tmp_prefix}{path.name}.")
        try:
            os.fchmod(fd, default_mode())  # mkstemp's 0600 would hide results from the group
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def freeze_writes(timeout_s: float = 10.0) -> bool:
    """Wait (at most `timeout_s`) for the atomic write under way in another thread, then keep
    every other thread from writing, for good: for a process about to end at once. The calling
    thread may still write. Returns whether the other threads were stopped in time."""
    return _WRITING.acquire(timeout=timeout_s)


def strict_json_values(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, which JSON can express (e.g. the
    epsilon of DP-SGD without noise is infinite)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json_values(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json_values(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Standard JSON (no NaN or Infinity tokens), written atomically."""
    text = json.dumps(strict_json_values(obj), indent=2, allow_nan=False)
    write_atomic(path, text + "\n")


REWRITE = "fedattack writes it whole or not at all, so it was changed since: delete it and run " \
    "the same command again to redo what it records"


def read_json(path: str | Path) -> Any:
    """The JSON document in `path`; DamagedJSON (one line naming the file) when it is not one."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except json.JSONDecodeError as err:
        raise DamagedJSON(path, f"not valid JSON ({err.msg} at line {err.lineno} column "
                                f"{err.colno})", REWRITE) from None
    except UnicodeDecodeError as err:
        raise DamagedJSON(path, f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                                f"{err.start})", REWRITE) from None


class UnsafePath(ValueError):
    """A path a run would write or delete that does not lie inside its run directory."""


def _is_inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` (relative to ``root``, or absolute) after proving that it lies inside ``root``
    once every ``..`` and symbolic link is resolved; raises UnsafePath otherwise.

    Every file a run writes or deletes goes through this first, so that neither a name such as
    ``..`` nor a symbolic link planted in a run directory can make it touch anything outside."""
    root = Path(root)
    resolved_root = root.resolve()
    target = (root / path).resolve()
    if target == resolved_root or not _is_inside(resolved_root, target):
        raise UnsafePath(f"{root / path} lies outside the run directory {root}; refusing to "
                         "write or delete it")
    return root / path


def child_dir(parent: str | Path, name: str) -> Path:
    """``parent/name`` for a run directory named after an experiment or campaign, after proving
    that ``name`` is one plain path component and the result lies inside ``parent``."""
    if (not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name
            or os.sep in name or (os.altsep and os.altsep in name)):
        raise UnsafePath(f"{name!r} is not a plain folder name; refusing to use it as a run "
                         f"directory under {parent}")
    return inside(parent, name)


def remove_tree(root: str | Path, path: str | Path) -> None:
    """Delete the folder ``path`` inside ``root`` (proven inside first); absent is fine."""
    import shutil

    target = inside(root, path)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)


def remove_file(root: str | Path, path: str | Path) -> None:
    """Delete the file ``path`` inside ``root`` (proven inside first); absent is fine."""
    inside(root, path).unlink(missing_ok=True)


# The first line of every run directory's config.yaml: what `fedattack clean` recognises a run
# directory by (a YAML comment, so the file still reads as the experiment it holds).
RUN_DIR_MARKER = "# fedattack run directory: the resolved configuration of this run\n"


class CorruptedFile(Exception):
    """A file of a run directory that is missing, unreadable or not what was written there."""

    def __init__(self, path: str | Path, reason: str, remedy: str = "") -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{self.path}: {reason}" + (f"; {remedy}" if remedy else ""))


class DamagedJSON(CorruptedFile, ValueError):
    """A JSON file of a run that does not parse; a ValueError too, as json.loads raises, so a
    reader that tolerates a file being replaced still does."""


CHECKSUMS = "checksums.json"


def file_sha256(path: str | Path, block: int = 1 << 24) -> str:
    """SHA-256 of a file's bytes, read in blocks (never mapped, never all at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: str | Path, names: list[str]) -> None:
    """`folder/checksums.json`: the SHA-256 of each named file of the folder, written last."""
    folder = Path(folder)
    write_json(folder / CHECKSUMS, {name: file_sha256(folder / name) for name in names})


def verify_checksums(folder: str | Path, names: list[str], remedy: str) -> None:
    """Check the named files of `folder` against its checksums.json; CorruptedFile (one line
    naming the file) for a missing, unreadable or changed file."""
    folder = Path(folder)
    index = folder / CHECKSUMS
    try:
        expected = json.loads(index.read_bytes())
        if not isinstance(expected, dict):
            raise ValueError("not a mapping")
    except FileNotFoundError:
        raise CorruptedFile(index, "missing (the checksums of the files beside it)",
                            remedy) from None
    except (OSError, ValueError) as err:
        raise CorruptedFile(index, f"unreadable ({err})", remedy) from None
    for name in names:
        path = folder / name
        if name not in expected:
            raise CorruptedFile(index, f"lists no checksum of {name}", remedy)
        try:
            actual = file_sha256(path)
        except OSError as err:
            raise CorruptedFile(path, f"unreadable ({err.strerror or err})", remedy) from None
        if actual != expected[name]:
            raise CorruptedFile(path, "changed since it was written (its SHA-256 differs from "
                                f"{index.name}'s)", remedy)


class DirectoryBusy(Exception):
    """A run directory that another process is running into."""


def _lock_holder(folder: Path) -> str:
    """The pid holding a flock on folder, from /proc/locks (Linux); "unknown" elsewhere."""
    try:
        st = folder.stat()
        device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if "FLOCK" in parts and device in parts:
                return parts[parts.index(device) - 1]
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


@contextlib.contextmanager
def exclusive(folder: str | Path):
    """Hold an exclusive lock on the folder itself (flock on its descriptor: nothing is written
    into it, so a finished run directory stays as it was) for the duration; DirectoryBusy at
    once, naming the holder's pid, if another process holds it. The kernel releases the lock
    when the holder exits, however it exits."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryBusy(f"{folder} is in use by another fedattack run (pid "
                                f"{_lock_holder(folder)}); wait for it to end or choose another "
                                "--out") from None
        yield folder
    finally:
        os.close(fd)  # releases the lock


def is_leftover_temporary(name: str) -> bool:
    """Names of the temporary files and folders that atomic writes leave when killed:
    `.<name>.<random>.tmp` (write_atomic), `.tmp-<name>.<random>` (snapshots),
    `.<name>.tmp-<random>` (feature caches)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)


def remove_leftover_temporaries(root: str | Path) -> list[Path]:
    """Delete what killed writers left under root (call it holding root's lock); return it."""
    root = Path(root)
    found = [p for p in root.rglob(".*") if is_leftover_temporary(p.name)]
    removed = []
    for path in sorted(found, key=lambda p: len(p.parts)):
        if path.exists() or path.is_symlink():
            remove_tree(root, path.relative_to(root))
            removed.append(path)
    return removed
