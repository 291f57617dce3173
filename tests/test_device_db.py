"""Per-device tuning databases handed between machines: archives are checked, merges are exact.

The databases here are MetaSchedule's JSON files written by hand in its line format (one
``[hash, workload]`` per line, one ``[workload line, [trace, seconds, target, args]]`` per
record), so the checks run without tuning anything; tests/test_tuning.py does the same with
a database that real tuning filled.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from canao.compile import DEVICE_FILE, export_database, import_database, list_databases
from canao.errors import TargetError
from canao.targets import DeviceIdentity

DEVICE = DeviceIdentity(target={"kind": "llvm", "mcpu": "znver3"}, features=("avx2",),
                        cpu="Test CPU", threads=1, tvm="0.27.0.post1", llvm="22")


def _database(root: Path, workloads: list[str], records: list[tuple[int, float]]) -> Path:
    folder = root / DEVICE.key
    folder.mkdir(parents=True)
    (folder / DEVICE_FILE).write_text(json.dumps(DEVICE.to_dict()))
    (folder / "database_workload.json").write_text(
        "".join(json.dumps([f"h{w}", w]) + "\n" for w in workloads))
    (folder / "database_tuning_record.json").write_text(
        "".join(json.dumps([i, [["trace"], [s], {"kind": "llvm"}, []]]) + "\n"
                for i, s in records))
    return folder


def test_an_import_merges_without_duplicating(tmp_path: Path) -> None:
    src = _database(tmp_path / "a", ["w1", "w2"], [(0, 1.0), (1, 2.0)])
    archive = tmp_path / "db.tar.gz"
    assert export_database(src, archive)["records"] == 2
    dst_root = tmp_path / "b"
    _database(dst_root, ["w2", "w3"], [(0, 2.0), (1, 3.0)])  # w2's record is the same one
    r = import_database(archive, dst_root)
    assert (r["added_workloads"], r["added_records"]) == (1, 1)
    assert (r["workloads"], r["records"]) == (3, 3)
    again = import_database(archive, dst_root)
    assert (again["added_workloads"], again["added_records"]) == (0, 0)
    (row,) = list_databases(dst_root)
    assert row["key"] == DEVICE.key and row["records"] == 3


def _archive(path: Path, **members: bytes) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(("members", "needle"), [
    ({"database_workload.json": b"", "database_tuning_record.json": b""}, "no device.json"),
    ({"attempted.json": b"[1]"}, "attempted.json must map"),
    ({"database_tuning_record.json": b'[5, [[], [1.0], {}, []]]\n'}, "names no workload"),
    ({"database_tuning_record.json": b'[0, "x"]\n'}, "malformed"),
    ({"../escape.json": b"{}"}, "unexpected member"),
])
def test_a_bad_archive_is_refused_and_changes_nothing(tmp_path: Path, members: dict,
                                                      needle: str) -> None:
    good = {DEVICE_FILE: json.dumps(DEVICE.to_dict()).encode(),
            "database_workload.json": b'["h", "w"]\n', "database_tuning_record.json": b""}
    archive = _archive(tmp_path / "bad.tar.gz", **{**good, **members})
    if needle == "no device.json":
        archive = _archive(tmp_path / "bad.tar.gz", **members)
    with pytest.raises(TargetError, match=needle):
        import_database(archive, tmp_path / "root")
    assert not (tmp_path / "root" / DEVICE.key / "database_workload.json").exists()


def test_an_export_to_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    src = _database(tmp_path / "a", ["w1"], [(0, 1.0)])
    with pytest.raises(TargetError, match="does not exist"):
        export_database(src, tmp_path / "nowhere" / "db.tar.gz")
