"""The per-device tuning databases: list them, export one, import (merge) one.

Each device identity has one MetaSchedule JSON database, ``<tuning root>/<device key>/``,
shared by every study and worker on that device (see :func:`canao.compile.device_tuning_dir`).
A team hands a warm database to a new machine of the same device as an archive: the
database files plus ``device.json``, the identity they belong to. Importing merges into
the local database of that identity (records already there are kept, nothing is
duplicated), under the database's own lock, so a running search is not disturbed.

MetaSchedule's JSON database is two line-oriented files: ``database_workload.json`` (one
``[structural hash, workload]`` per line) and ``database_tuning_record.json`` (one
``[workload line number, record]`` per line). They are read and merged as JSON, without TVM.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from canao._locks import file_lock
from canao.errors import TargetError
from canao.targets import DeviceIdentity

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
ATTEMPTED, STALLED = "attempted.json", "stalled.json"
DEVICE_FILE = "device.json"
LOCK = ".lock"
MEMBERS = (DEVICE_FILE, WORKLOADS, RECORDS, ATTEMPTED, STALLED)  # what an archive may hold
MAX_MEMBER_BYTES = 1 << 30


def _lines(path: Path) -> list[Any]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def describe(folder: Path) -> dict[str, Any]:
    """One database: its device, workload and record counts, size on disk."""
    device = _json(folder / DEVICE_FILE)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    out: dict[str, Any] = {"key": folder.name, "path": str(folder), "bytes": size,
                           "workloads": len(_lines(folder / WORKLOADS)),
                           "records": len(_lines(folder / RECORDS)),
                           "stalled": len(_json(folder / STALLED)), "device": None}
    if device:
        identity = DeviceIdentity.from_dict(device, where=str(folder / DEVICE_FILE))
        out["device"] = identity.describe()
        out["identity"] = identity.to_dict()
    return out


def list_databases(root: Path) -> list[dict[str, Any]]:
    """Every device database under ``root``, by key."""
    if not root.is_dir():
        return []
    return [describe(p) for p in sorted(root.iterdir()) if (p / DEVICE_FILE).is_file()]


def export_database(folder: Path, out: Path) -> dict[str, Any]:
    """Write ``folder``'s database as a ``.tar.gz`` archive (read under its lock)."""
    if not (folder / DEVICE_FILE).is_file():
        raise TargetError(f"{folder}: not a canao device database (no {DEVICE_FILE})")
    if out.exists():
        raise TargetError(f"{out}: already exists; choose another --out")
    if not out.parent.is_dir():
        raise TargetError(f"{out}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with file_lock(folder / LOCK), tarfile.open(tmp, "w:gz") as tar:
            for name in MEMBERS:
                if (folder / name).is_file():
                    tar.add(folder / name, arcname=name)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TargetError(f"{out}: cannot write the archive: {e}") from e
    return describe(folder)


def _read_archive(archive: Path) -> dict[str, bytes]:
    """The archive's members by name; anything but the known plain files is refused."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            files = {}
            for m in tar.getmembers():
                if m.name not in MEMBERS or not m.isfile() or m.size > MAX_MEMBER_BYTES:
                    raise TargetError(f"{archive}: unexpected member {m.name!r}; not a canao "
                                      f"tuning database archive (members: {', '.join(MEMBERS)})")
                f = tar.extractfile(m)
                assert f is not None
                files[m.name] = f.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise TargetError(f"{archive}: not a readable .tar.gz archive: {e}") from e
    for name in (DEVICE_FILE, WORKLOADS, RECORDS):
        if name not in files:
            raise TargetError(f"{archive}: no {name}; not a canao tuning database archive")
    return files


def import_database(archive: Path, root: Path) -> dict[str, Any]:
    """Merge an exported database into ``root``'s database of the same device identity.

    Returns:
        The merged database's description plus ``added_workloads`` and ``added_records``.

    Raises:
        TargetError: the archive is not a canao tuning database, or is malformed.
    """
    files = _read_archive(archive)
    try:
        identity = DeviceIdentity.from_dict(json.loads(files[DEVICE_FILE]),
                                            where=f"{archive}: {DEVICE_FILE}")
        src_w = [json.loads(ln) for ln in files[WORKLOADS].decode().splitlines() if ln.strip()]
        src_r = [json.loads(ln) for ln in files[RECORDS].decode().splitlines() if ln.strip()]
        attempted = json.loads(files.get(ATTEMPTED, b"{}"))
        stalled = json.loads(files.get(STALLED, b"{}"))
        if not isinstance(attempted, dict) or not all(isinstance(v, int)
                                                      for v in attempted.values()):
            raise ValueError(f"{ATTEMPTED} must map workloads to trial budgets")
        if not isinstance(stalled, dict):
            raise ValueError(f"{STALLED} must map workloads to their records")
        if any(not (isinstance(w, list) and len(w) == 2 and all(isinstance(x, str) for x in w))
               for w in src_w):
            raise ValueError("a workload is not a [hash, module] pair")
        # MetaSchedule's record: [workload line, [trace, run seconds, target, arguments]].
        if any(not (isinstance(r, list) and len(r) == 2 and isinstance(r[0], int)
                    and 0 <= r[0] < len(src_w) and isinstance(r[1], list) and len(r[1]) == 4)
               for r in src_r):
            raise ValueError("a tuning record is malformed or names no workload of the archive")
    except (ValueError, UnicodeDecodeError) as e:
        raise TargetError(f"{archive}: malformed tuning database: {e}") from e
    folder = root / identity.key
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / LOCK):
        if not (folder / DEVICE_FILE).is_file():
            _write(folder / DEVICE_FILE, json.dumps(identity.to_dict(), indent=2, sort_keys=True))
        dst_w, dst_r = _lines(folder / WORKLOADS), _lines(folder / RECORDS)
        index = {json.dumps(w, sort_keys=True): i for i, w in enumerate(dst_w)}
        remap = {}
        added_w = added_r = 0
        for i, w in enumerate(src_w):
            k = json.dumps(w, sort_keys=True)
            if k not in index:
                index[k] = len(dst_w)
                dst_w.append(w)
                added_w += 1
            remap[i] = index[k]
        seen = {json.dumps(r, sort_keys=True) for r in dst_r}
        for r in src_r:
            moved = [remap[r[0]], r[1]]
            k = json.dumps(moved, sort_keys=True)
            if k not in seen:
                seen.add(k)
                dst_r.append(moved)
                added_r += 1
        merged_attempted = _json(folder / ATTEMPTED)
        for k, v in attempted.items():
            merged_attempted[k] = max(int(v), int(merged_attempted.get(k, 0)))
        merged_stalled = {**stalled, **_json(folder / STALLED)}
        # Workloads before records: a reader never sees a record naming a missing line.
        _write(folder / WORKLOADS, "".join(json.dumps(w) + "\n" for w in dst_w))
        _write(folder / RECORDS, "".join(json.dumps(r) + "\n" for r in dst_r))
        _write(folder / ATTEMPTED, json.dumps(merged_attempted, indent=0, sort_keys=True))
        _write(folder / STALLED, json.dumps(merged_stalled, indent=0, sort_keys=True))
    return {**describe(folder), "added_workloads": added_w, "added_records": added_r}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)

