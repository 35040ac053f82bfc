"""The snapshot store: what each attacker observed during a run, written once, read many times.

A run directory holds one store. The store is split into *views*, one per observer, and the attack
code is handed a :class:`View`, never the store, so that it can read only what its threat model
grants (DESIGN.md, "Rules that keep results honest"):

- ``"global"``: the aggregator's view (per-participant uploads, the models it sent, the aggregates);
- ``"local-<pid>"``: participant ``pid``'s view (the models it received, its own uploads);
- ``"standalone"``: the stand-alone or fine-tuning trainer's view.

Layout::

    <root>/<view>/<kind>-r<round:04d>[-p<partition>][-<tag>].safetensors
    <root>/<view>/manifest.json

Each view has a single writer (the aggregator, participant ``pid`` in its own process, the
stand-alone trainer), so per-view manifests never race between processes; within a process a lock
per view directory serialises writers. Every file is written to a temporary name in the same
directory, fsynced and renamed over its final name, tensors first and manifest second: a crash in
between leaves the previous manifest valid and an orphan tensor file that nothing lists.

Tensors are stored with safetensors and read with safetensors only (never pickle, never
``torch.load``); every read checks the file's SHA-256 against the manifest first.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from fedattack.io import CorruptedFile, write_atomic

KINDS = ("upload", "global", "sent")
"""Federated kinds. ``upload``: a participant's model returned to the aggregator; ``global``: the
aggregate after a round (round 0 is the initial model); ``sent``: the model the aggregator sent to
one participant (differs from ``global`` under isolation or gradient ascent)."""

MODEL_KIND = "model"
"""Stand-alone kind: ``round`` is the epoch index, or a ``tag`` names the model (``"before"`` and
``"after"`` for fine-tuning)."""

GENERATED_KIND = "generated"
"""A GAN attacker's samples after a round (one tensor ``x``), in the attacker's local view."""

ALL_KINDS = (*KINDS, MODEL_KIND, GENERATED_KIND)
PARTITIONED_KINDS = ("upload", "sent")

GLOBAL_VIEW = "global"
STANDALONE_VIEW = "standalone"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
SUFFIX = ".safetensors"
_TMP_PREFIX = ".tmp-"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LOCAL_VIEW = re.compile(r"local-(\d+)")

# One lock per view directory, shared by every SnapshotStore of this process that opens it.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()

Tensors = Mapping[str, Any] | Iterable[tuple[str, Any]]


def local_view(partition: int) -> str:
    """The name of participant ``partition``'s view."""
    return f"local-{int(partition)}"


class SnapshotCorrupted(CorruptedFile):
    """A snapshot or manifest file is missing, unreadable, or does not match its checksum."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        super().__init__(path, "corrupted snapshot" + (f": {reason}" if reason else ""),
                         REDO_TRAINING)


REDO_TRAINING = ("the recorded training cannot be trusted: run again into a new --out (or "
                 "delete this run directory's snapshots/ and run.json to train again)")


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot, as listed in its view's manifest."""

    view: str
    kind: str
    round: int
    partition: int | None
    tag: str | None
    file: str  # relative to the store root, with "/" separators
    sha256: str  # of the file bytes
    names: tuple[str, ...]  # tensor names, in the order they were given
    shapes: tuple[tuple[int, ...], ...] = ()
    dtypes: tuple[str, ...] = ()  # torch dtype names without the "torch." prefix

    @property
    def key(self) -> tuple[str, str, int, int | None, str | None]:
        """What identifies a snapshot: written at most once."""
        return (self.view, self.kind, self.round, self.partition, self.tag)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["names"] = list(self.names)
        d["shapes"] = [list(s) for s in self.shapes]
        d["dtypes"] = list(self.dtypes)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SnapshotRecord:
        return cls(
            view=str(d["view"]),
            kind=str(d["kind"]),
            round=int(d["round"]),
            partition=None if d["partition"] is None else int(d["partition"]),
            tag=None if d["tag"] is None else str(d["tag"]),
            file=str(d["file"]),
            sha256=str(d["sha256"]),
            names=tuple(str(n) for n in d["names"]),
            shapes=tuple(tuple(int(x) for x in s) for s in d.get("shapes", ())),
            dtypes=tuple(str(t) for t in d.get("dtypes", ())),
        )


@dataclass(frozen=True)
class Snapshot:
    """One model to be written (see :meth:`SnapshotStore.write_many`)."""

    kind: str
    round: int
    tensors: Tensors
    partition: int | None = None
    tag: str | None = None


def _sort_key(r: SnapshotRecord) -> tuple:
    return (r.view, r.round, r.kind, -1 if r.partition is None else r.partition, r.tag or "")


def _matches(r: SnapshotRecord, kind, round, partition, tag) -> bool:
    return (
        (kind is None or r.kind == kind)
        and (round is None or r.round == round)
        and (partition is None or r.partition == partition)
        and (tag is None or r.tag == tag)
    )


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} must match {_NAME.pattern!r} (letters, digits, '_', '.', '-'), got {value!r}"
        )


def _check_key(view: str, kind: str, round: int, partition: int | None, tag: str | None) -> None:
    _check_name("view", view)
    if kind not in ALL_KINDS:
        raise ValueError(f"kind must be one of {ALL_KINDS}, got {kind!r}")
    if isinstance(round, bool) or not isinstance(round, int | np.integer) or round < 0:
        raise ValueError(f"round must be a non-negative int, got {round!r}")
    if kind in PARTITIONED_KINDS:
        if isinstance(partition, bool) or not isinstance(partition, int | np.integer):
            raise ValueError(f"kind {kind!r} needs the participant id as partition")
        if partition < 0:
            raise ValueError(f"partition must be non-negative, got {partition}")
        local = _LOCAL_VIEW.fullmatch(view)
        if local and int(local.group(1)) != partition:
            raise ValueError(
                f"view {view!r} belongs to participant {local.group(1)}: it cannot observe "
                f"partition {partition}'s {kind!r} model"
            )
    elif partition is not None:
        raise ValueError(f"kind {kind!r} takes no partition, got {partition!r}")
    if tag is not None:
        _check_name("tag", tag)


def _file_name(kind: str, round: int, partition: int | None, tag: str | None) -> str:
    name = f"{kind}-r{round:04d}"
    if partition is not None:
        name += f"-p{partition}"
    if tag is not None:
        name += f"-{tag}"
    return name + SUFFIX


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    """A contiguous CPU tensor holding exactly ``value``'s bits (dtype and shape unchanged)."""
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided:
            raise ValueError(f"tensor {name!r}: only dense tensors can be stored")
        # A private copy: tied weights (one storage under two names) are refused by safetensors.
        return value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"tensor {name!r}: unsupported dtype {array.dtype}")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    # np.ascontiguousarray would turn a 0-d array into shape (1,); copy(order="C") keeps it 0-d.
    return torch.from_numpy(array.copy(order="C"))


def _to_tensors(tensors: Tensors) -> dict[str, torch.Tensor]:
    items = list(tensors.items()) if isinstance(tensors, Mapping) else list(tensors)
    out: dict[str, torch.Tensor] = {}
    for name, value in items:
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        if name in out:
            raise ValueError(f"duplicate tensor name {name!r}")
        out[name] = _to_tensor(name, value)
    return out


def _view_lock(directory: Path) -> threading.Lock:
    key = os.path.realpath(directory)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class SnapshotStore:
    """All views of one run. Writers use :meth:`write`; attacks get a :meth:`view`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # view -> (stat signature of its manifest, records)
        self._cache: dict[str, tuple[tuple[int, int, int], list[SnapshotRecord]]] = {}
        self._cache_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.root)!r})"

    # -- writing -------------------------------------------------------------------------------

    def write(
        self,
        view: str,
        kind: str,
        round: int,
        tensors: Tensors,
        partition: int | None = None,
        tag: str | None = None,
    ) -> SnapshotRecord:
        """Store one model (``name -> array``, in order) as a new snapshot of ``view``.

        Raises ValueError if this (view, kind, round, partition, tag) was already written.
        """
        return self.write_many(view, [Snapshot(kind, round, tensors, partition, tag)])[0]

    def write_many(self, view: str, snapshots: Iterable[Snapshot]) -> list[SnapshotRecord]:
        """Store several models as new snapshots of ``view``, with one manifest write for all.

        A round's uploads and aggregate are written this way: rewriting the manifest after
        every file would cost O(snapshots so far) per file, quadratic over a run. The tensor
        files are written first, then the manifest that lists them (a crash in between leaves
        the previous manifest valid). Raises ValueError before anything is written if a key
        was already written or is given twice; tensors that cannot be stored raise it when
        their turn comes, and the files written before them stay unlisted, as after a crash.
        """
        snapshots = list(snapshots)
        keys = []
        for s in snapshots:
            _check_key(view, s.kind, s.round, s.partition, s.tag)
            keys.append((view, s.kind, int(s.round),
                         None if s.partition is None else int(s.partition), s.tag))
        if len(set(keys)) != len(keys):
            raise ValueError(f"snapshots {keys} given twice (written once)")
        directory = self.root / view
        directory.mkdir(parents=True, exist_ok=True)
        with _view_lock(directory):
            existing = self._manifest(view)
            written = {r.key for r in existing}
            for key in keys:
                if key in written:
                    raise ValueError(f"snapshot {key} was already written (written once)")
            if not snapshots:
                return []
            new = []
            for s in snapshots:  # one file's bytes in memory at a time
                record, data = self._prepare(view, s)
                write_atomic(self.root / record.file, data, tmp_prefix=_TMP_PREFIX)
                new.append(record)
                del data
            records = [*existing, *new]
            manifest = {
                "version": MANIFEST_VERSION,
                "view": view,
                "records": [r.to_json() for r in records],
            }
            path = directory / MANIFEST
            write_atomic(path, json.dumps(manifest, indent=1).encode(), tmp_prefix=_TMP_PREFIX)
            st = path.stat()
            with self._cache_lock:  # what was just written needs no re-reading
                self._cache[view] = ((st.st_mtime_ns, st.st_size, st.st_ino), records)
        return new

    def _prepare(self, view: str, snapshot: Snapshot) -> tuple[SnapshotRecord, bytes]:
        """The record and file bytes of one snapshot of ``view`` (checked, not yet written)."""
        kind, round, partition, tag = (snapshot.kind, snapshot.round, snapshot.partition,
                                       snapshot.tag)
        round = int(round)
        partition = None if partition is None else int(partition)
        named = _to_tensors(snapshot.tensors)
        names = tuple(named)
        data = _safetensors_save(
            named,
            metadata={
                "names": json.dumps(names),
                "key": json.dumps([view, kind, round, partition, tag]),
            },
        )
        file_name = _file_name(kind, round, partition, tag)
        record = SnapshotRecord(
            view=view,
            kind=kind,
            round=round,
            partition=partition,
            tag=tag,
            file=f"{view}/{file_name}",
            sha256=hashlib.sha256(data).hexdigest(),
            names=names,
            shapes=tuple(tuple(t.shape) for t in named.values()),
            dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in named.values()),
        )
        return record, data

    # -- listing -------------------------------------------------------------------------------

    def views(self) -> list[str]:
        """Names of the views that hold at least one snapshot."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()
        )

    def view(self, name: str) -> View:
        """A read-only handle on one view: what one attacker may read."""
        available = self.views()
        if name not in available and (self.root / name).is_dir():
            raise SnapshotCorrupted(self.root / name / MANIFEST, "missing (it lists the "
                                    "snapshots of the files beside it)")
        if name not in available:  # the whole folder gone: a damaged run, not a bug
            raise SnapshotCorrupted(self.root / name, "the view's folder is missing (views "
                                    f"present: {', '.join(available) or 'none'})")
        return View(self, name)

    def records(
        self,
        view: str | None = None,
        kind: str | None = None,
        round: int | None = None,
        partition: int | None = None,
        tag: str | None = None,
    ) -> list[SnapshotRecord]:
        """Records matching every filter given (None: any), by (view, round, kind, partition)."""
        views = self.views() if view is None else [view]
        found = [
            r for v in views for r in self._manifest(v) if _matches(r, kind, round, partition, tag)
        ]
        return sorted(found, key=_sort_key)

    def _manifest(self, view: str) -> list[SnapshotRecord]:
        """The view's records; the manifest is re-read only when its file changed."""
        _check_name("view", view)
        path = self.root / view / MANIFEST
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._cache_lock:
            cached = self._cache.get(view)
        if cached is not None and cached[0] == signature:
            return list(cached[1])
        try:
            manifest = json.loads(path.read_bytes())
            if manifest.get("version") != MANIFEST_VERSION:
                raise ValueError(f"unknown manifest version {manifest.get('version')!r}")
            records = [SnapshotRecord.from_json(d) for d in manifest["records"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise SnapshotCorrupted(path, f"unreadable manifest ({e})") from e
        for r in records:
            expected_file = f"{view}/{_file_name(r.kind, r.round, r.partition, r.tag)}"
            if r.view != view or r.file != expected_file:
                raise SnapshotCorrupted(path, f"manifest entry {r.key} does not belong to {view!r}")
        with self._cache_lock:
            self._cache[view] = (signature, records)
        return list(records)

    # -- reading -------------------------------------------------------------------------------

    def read(self, record: SnapshotRecord) -> dict[str, torch.Tensor]:
        """The snapshot's tensors, in name order, after checking the file's SHA-256."""
        record = self._listed(record)
        path = self.root / record.file
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SnapshotCorrupted(path, f"unreadable ({e})") from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != record.sha256:
            raise SnapshotCorrupted(path, f"sha256 {digest} != manifest's {record.sha256}")
        try:
            loaded = _safetensors_load(data)
        except (SafetensorError, ValueError) as e:
            raise SnapshotCorrupted(path, f"not a safetensors file ({e})") from e
        if set(loaded) != set(record.names):
            raise SnapshotCorrupted(path, "tensor names differ from the manifest's")
        return {name: loaded[name] for name in record.names}

    def read_arrays(self, record: SnapshotRecord) -> list[np.ndarray]:
        """The snapshot's tensors as numpy arrays in name order (Flower's parameter format)."""
        return [t.numpy() for t in self.read(record).values()]

    def _listed(self, record: SnapshotRecord) -> SnapshotRecord:
        """The manifest's own copy of ``record``: checksums come from disk, never the caller."""
        for r in self._manifest(record.view):
            if r.key == record.key:
                if r != record:
                    raise ValueError(f"record {record.key} differs from the manifest's")
                return r
        raise KeyError(f"snapshot {record.key} is not in the manifest of {self.root}")


class View:
    """Read-only access to one view of a store: what ONE attacker may read."""

    def __init__(self, store: SnapshotStore, name: str) -> None:
        self._store = store
        self.name = name

    def __repr__(self) -> str:
        return f"View({self.name!r} of {self._store!r})"

    def records(
        self,
        kind: str | None = None,
        round: int | None = None,
        partition: int | None = None,
        tag: str | None = None,
    ) -> list[SnapshotRecord]:
        return self._store.records(self.name, kind, round, partition, tag)

    def rounds(self, kind: str | None = None) -> list[int]:
        """The rounds (or epochs) this view holds a snapshot of, optionally of one kind."""
        return sorted({r.round for r in self.records(kind=kind)})

    def read(self, record: SnapshotRecord) -> dict[str, torch.Tensor]:
        self._own(record)
        return self._store.read(record)

    def read_arrays(self, record: SnapshotRecord) -> list[np.ndarray]:
        self._own(record)
        return self._store.read_arrays(record)

    def _own(self, record: SnapshotRecord) -> None:
        if record.view != self.name or not record.file.startswith(self.name + "/"):
            raise ValueError(
                f"view {self.name!r} cannot read a snapshot of view {record.view!r} "
                "(outside this attacker's threat model)"
            )
