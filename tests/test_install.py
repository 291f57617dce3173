"""An installed wheel works outside the checkout: it carries the shipped spaces and targets.

The wheel is built from a copy of the project's build inputs and installed, without its
dependencies, into a fresh venv. That venv then sees this venv's packages through a ``.pth``
line, but not the checkout's canao: the ``.pth`` files of a folder added that way (the
editable install's import finder among them) are not run. Its ``canao`` runs from a folder
outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from (pyproject.toml and setup.py name nothing else).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "canao", "search_spaces", "tvm_targets")
SHIPPED = {"search_spaces": ".yaml", "tvm_targets": ".json"}


def _stems(folder: str) -> list[str]:
    return sorted(p.stem for p in (REPO / folder).glob(f"*{SHIPPED[folder]}"))


def _run(cmd: list[str | Path], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@dataclass(frozen=True)
class Installed:
    root: Path
    bin: Path  # the fresh venv's scripts
    site: Path  # its site-packages, where the wheel went
    env: dict[str, str]  # its bin first on PATH; no PYTHONPATH
    work: Path  # a folder outside the checkout to run from

    def canao(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "canao"), *args], capture_output=True, text=True,
                              cwd=self.work, env=self.env, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    # Built from a copy: an in-tree build would write build/ and canao.egg-info into the checkout.
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_shipped"))
        else:
            shutil.copy2(REPO / name, src / name)
    # Offline: this venv has setuptools (torch requires >= 77, whose bdist_wheel needs no `wheel`).
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", root / "wheels"])
    (wheel,) = (root / "wheels").glob("canao-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, suffix in SHIPPED.items():
        inside = sorted(Path(n).stem for n in names if n.startswith(f"canao/_shipped/{folder}/"))
        assert inside == _stems(folder), f"{wheel.name} carries {inside} from {folder}/"
        assert all(n.endswith(suffix) for n in names if n.startswith(f"canao/_shipped/{folder}/"))

    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "-q", wheel])
    # Only now this venv's packages (canao's dependencies), so pip above saw no other canao.
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
                .stdout.strip())
    deps = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (site / "_canao_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))

    env = dict(os.environ)  # CANAO_CACHE_DIR: the session's cache (tests/conftest.py)
    for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"):
        env.pop(var, None)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    work = root / "elsewhere"
    work.mkdir()
    return Installed(root=root, bin=venv / "bin", site=site, env=env, work=work)


def test_checkout_reads_top_level_folders() -> None:
    # The editable install (or a run from the checkout) has no package copy.
    from canao.space import shipped_dir

    assert not (REPO / "canao" / "_shipped").exists(), \
        "canao/_shipped/ exists in the checkout (left by hand); it would be read first"
    for folder in SHIPPED:
        assert shipped_dir(folder) == REPO / folder


def test_installed_canao_is_the_wheel(installed: Installed) -> None:
    # TVM too: importing it must leave canao (and its dist-info) the wheel's.
    code = ("import importlib.metadata as md, canao, tvm, canao.compile, canao.space as s\n"
            "print(canao.__file__); print(md.distribution('canao').locate_file('canao'))\n"
            "print(s.shipped_dir('search_spaces')); print(tvm.__file__)")
    out = _run([installed.bin / "python", "-c", code], cwd=installed.work, env=installed.env)
    module, dist, spaces, tvm = (Path(line) for line in out.stdout.split())
    assert module == installed.site / "canao" / "__init__.py"
    assert dist.resolve() == (installed.site / "canao").resolve()
    assert spaces == installed.site / "canao" / "_shipped" / "search_spaces"
    assert not module.resolve().is_relative_to(REPO)
    assert not tvm.resolve().is_relative_to(installed.site)  # a dependency, through the .pth
    assert shutil.which("canao", path=installed.env["PATH"]) == str(installed.bin / "canao")


def test_installed_canao_lists_and_names_the_shipped_files(installed: Installed) -> None:
    for command, folder in (("spaces", "search_spaces"), ("targets", "tvm_targets")):
        proc = installed.canao(command)
        assert proc.returncode == 0, proc.stderr
        where = installed.site / "canao" / "_shipped" / folder
        assert proc.stdout.split() == [str(where / f"{s}{SHIPPED[folder]}") for s in _stems(folder)]
    assert "vit_digits" in _stems("search_spaces") and "host-cpu" in _stems("tvm_targets")

    proc = installed.canao("search", "--space", "no-such-space", "--target", "host-cpu")
    assert proc.returncode != 0
    assert f"no-such-space: no such space file (shipped: {', '.join(_stems('search_spaces'))})" \
        in proc.stderr
    proc = installed.canao("search", "--space", "vit_digits", "--target", "no-such-target")
    assert proc.returncode != 0
    assert f"(shipped: {', '.join(_stems('tvm_targets'))})" in proc.stderr


@pytest.mark.slow
def test_installed_canao_runs_the_default_profile_path(installed: Installed) -> None:
    """The shipped default profile (host-cpu, by name) end to end from the wheel: the search
    tunes at tuned-8, export rebuilds at a final rung and checks the result against the searched
    candidate, and the bundle predicts; a fresh tuning database, so both rungs really tune.
    The export asks for 16 trials per workload instead of the profile's 64: the final rung's
    path is under test, not its schedules (64 cost three quarters of this test's time)."""
    root = installed.root
    # The smallest model of the tiny space: the path, not the model, is under test.
    tiny = root / "smallest.yaml"
    tiny.write_text((Path(__file__).parent / "data" / "tiny_digits.yaml").read_text()
                    .replace("layers: [1, 2]", "layers: [1]").replace("heads: [1, 2]", "heads: [1]")
                    .replace("ffn: [16, 32, 64]", "ffn: [16]").replace("hidden: [16, 32]", "hidden: [16]")
                    .replace("sampler: random", "sampler: random\n  tune_space_first: true"))
    env = {**installed.env, "CANAO_TUNING_DIR": str(root / "tuning")}
    common = ["--study", "default", "--storage", f"sqlite:///{root / 'x.db'}"]

    def canao(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(installed.bin / "canao"), "-q", *args], capture_output=True,
                              text=True, cwd=installed.work, env=env, timeout=1800)
        assert proc.returncode == 0, f"{args[0]}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    # The space's workloads tuned up front (a one-off per device): the trial tunes nothing.
    proc = canao("tuning", "space", "--space", str(tiny), "--target", "host-cpu",
                 "--artifacts", str(root / "art"))
    assert "1 workload model(s)" in proc.stdout and " 0 tuned" not in proc.stdout, proc.stdout
    proc = canao("search", "--space", str(tiny), "--target", "host-cpu", "--trials", "1",
                 "--seed", "3", "--artifacts", str(root / "art"), *common)
    assert "1 trial(s) finished in this run" in proc.stdout, proc.stdout
    assert "rung 'tuned-8'" in proc.stdout, proc.stdout
    con = sqlite3.connect(root / "x.db")
    attrs = dict(con.execute("SELECT key, value_json FROM trial_user_attributes").fetchall())
    con.close()
    workloads = json.loads(attrs["workloads"])
    assert workloads["tuned"] == 0 and 0 < workloads["applied"] <= workloads["tasks"], workloads
    assert json.loads(attrs["space_tuning"])["cached"], attrs["space_tuning"]
    out = root / "bundle"
    canao("export", "--trial", "0", "--out", str(out), "--final-trials", "16", *common)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fidelity"] == "final-16" and metrics["searched"]["fidelity"] == "tuned-8"
    assert metrics["tuning"]["tuned_tasks"] > 0, metrics["tuning"]
    proc = canao("predict", str(out))
    assert f"accuracy {metrics['test_accuracy']:.4f} on 360 samples" in proc.stdout, proc.stdout
