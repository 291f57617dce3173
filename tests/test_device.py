"""A device is an identity: keys, tuning databases, refused workers, bundles, drift.

Two CPUs cannot be had on one machine, so the "other machine" of these tests is this one
with TVM's host-CPU detection replaced (monkeypatched in-process, where the CLI runs); the
resolution, the study records, the keys and the refusals are all real.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from canao.compile import device_tuning_dir, resolve_device
from canao.runtime import META_FILE, write_checksums
from canao.space import load_space
from canao.study import candidate_key
from canao.targets import DeviceIdentity, missing_features, parse_profile

from .conftest import FAST_TARGET, TINY_SPACE, db_fingerprint, run_cli


def _profile(tmp_path: Path, name: str, **target: object) -> Path:
    data = json.loads(FAST_TARGET.read_text())
    data["target"] = {**data["target"], **target}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_host_is_never_a_key_and_two_cpus_are_two_devices(tmp_path: Path) -> None:
    space = load_space(TINY_SPACE)
    arch = space.base_arch()
    profiles = {cpu: parse_profile(_profile(tmp_path, cpu, mcpu=cpu).read_text(), name=cpu)
                for cpu in ("skylake-avx512", "znver3")}
    ids = {cpu: resolve_device(p) for cpu, p in profiles.items()}
    assert ids["skylake-avx512"].key != ids["znver3"].key
    assert "avx512f" in ids["skylake-avx512"].features
    assert "avx512f" not in ids["znver3"].features
    keys = {cpu: candidate_key("base", arch, space.candidate, profiles[cpu], ids[cpu])
            for cpu in ids}
    assert keys["skylake-avx512"] != keys["znver3"]
    dbs = {cpu: device_tuning_dir(i) for cpu, i in ids.items()}
    assert dbs["skylake-avx512"] != dbs["znver3"]
    for cpu, db in dbs.items():  # each database names the identity it belongs to
        assert DeviceIdentity.from_dict(json.loads((db / "device.json").read_text())) == ids[cpu]
    host = resolve_device(parse_profile(_profile(tmp_path, "h", mcpu="host").read_text()))
    assert host.target["mcpu"] not in ("host", "") and "host" not in json.dumps(host.to_dict())
    # The identity round-trips through its stored form.
    assert DeviceIdentity.from_dict(json.loads(json.dumps(host.to_dict()))).key == host.key


def test_missing_features_use_the_kernels_names() -> None:
    compiled = ["avx2", "avx512vnni", "sse4.2", "bmi", "fast-variable-perlane-shuffle"]
    kernel = {"avx2", "sse4_2", "bmi1", "pni"}
    assert missing_features(compiled, kernel) == ["avx512vnni"]  # tuning hints are ignored


def test_a_worker_on_another_device_is_refused_and_changes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import canao.compile._device as dev

    url = f"sqlite:///{tmp_path / 's.db'}"
    target = _profile(tmp_path, "host-fast", mcpu="host")
    # Drift is re-timed before every trial here, so the status shows it.
    data = json.loads(target.read_text())
    data["drift"] = {"every_trials": 1, "threshold": 0.5}
    target.write_text(json.dumps(data))
    code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target", str(target),
                         "--study", "s", "--storage", url, "--trials", "2",
                         "--artifacts", str(tmp_path / "a"))
    assert code == 0, text
    code, text = run_cli("status", "--storage", url)
    assert code == 0 and "device: " in text and dev.host_cpu() in text, text
    assert "drift: 2 sentinel timing(s)" in text, text
    (status,) = json.loads(run_cli("status", "--storage", url, "--json")[1])
    study = optuna.load_study(study_name="s", storage=url)
    assert all(t.user_attrs["device_key"] == status["device_key"] for t in study.trials)
    assert all("drift_ratio" in t.user_attrs for t in study.trials)

    other = "skylake-avx512" if dev.host_cpu() != "skylake-avx512" else "znver3"
    monkeypatch.setattr(dev, "host_cpu", lambda: other)
    before = db_fingerprint(tmp_path / "s.db")
    for command in ("worker", "resume"):
        code, text = run_cli(command, "--study", "s", "--storage", url, "--trials", "1")
        assert code == 2, text
        (line,) = [ln for ln in text.splitlines() if ln.startswith("canao: error:")]
        assert "study 's' measures on" in line and other in line and "not be comparable" in line
    assert db_fingerprint(tmp_path / "s.db") == before
    # Export times the final build: on another device it is refused too.
    code, text = run_cli("export", "--study", "s", "--storage", url, "--trial", "0",
                         "--out", str(tmp_path / "b"))
    assert code == 2 and "not be comparable" in text and not (tmp_path / "b").exists()


def test_a_bundle_for_missing_cpu_features_is_refused(finished_study: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    code, text = run_cli("export", "--study", "tiny", "--storage", finished_study["url"],
                         "--trial", "0", "--out", str(bundle))
    assert code == 0, text
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert metrics["device_key"] == DeviceIdentity.from_dict(metrics["device"]).key
    code, text = run_cli("predict", str(bundle), "--split", "validation")
    assert code == 0, text
    # A library compiled for Knights Mill's AVX-512 4FMAPS/4VNNIW (Xeon Phi only): no machine
    # this project runs on has them (an Emerald Rapids Xeon has AMX and AVX-512 FP16, the
    # features this test used before), so the refusal is exercised on any of them.
    from canao.measure import cpu_flags

    exotic = ["avx5124fmaps", "avx5124vnniw"]
    assert missing_features(exotic, cpu_flags() or set()) == exotic
    meta = json.loads((bundle / META_FILE).read_text())
    meta["features"] = [*meta["features"], *exotic]
    meta["target"] = {**meta["target"], "mcpu": "knm"}
    (bundle / META_FILE).write_text(json.dumps(meta))
    write_checksums(bundle)
    code, text = run_cli("predict", str(bundle), "--split", "validation")
    assert code == 2, text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("canao: error:")]
    assert "compiled for knm" in line and all(f in line for f in exotic)
    assert "canao export --cpu" in line


def test_export_builds_for_a_named_portable_cpu(finished_study: dict, tmp_path: Path) -> None:
    from canao.measure import cpu_flags

    out = tmp_path / "portable"
    code, text = run_cli("export", "--study", "tiny", "--storage", finished_study["url"],
                         "--trial", "0", "--cpu", "x86-64-v3", "--out", str(out))
    assert code == 0, text
    metrics = json.loads((out / "metrics.json").read_text())
    meta = json.loads((out / META_FILE).read_text())
    assert metrics["device"]["target"]["mcpu"] == "x86-64-v3" == meta["target"]["mcpu"]
    assert metrics["device_key"] != metrics["study_device_key"]  # its own identity
    assert "avx2" in meta["features"] and "avx512f" not in meta["features"]
    # A CPU this machine cannot run cannot be timed here: refused before anything is built.
    missing = missing_features(["amx-tile", "avx512fp16"], cpu_flags() or set())
    if missing:
        code, text = run_cli("export", "--study", "tiny", "--storage", finished_study["url"],
                             "--trial", "0", "--cpu", "sapphirerapids",
                             "--out", str(tmp_path / "spr"))
        assert code == 2 and "this machine lacks" in text and not (tmp_path / "spr").exists()
