"""Build hooks: the wheel carries the shipped search spaces and target profiles.

The checkout's top-level ``search_spaces/`` and ``tvm_targets/`` stay the only copy in git.
Building a wheel copies them into the package as ``canao/_shipped/<folder>/`` (in the build
folder, never in the source tree), where ``canao.space.shipped_dir`` looks first; an editable
install copies nothing and reads the top-level folders. An sdist carries the top-level folders,
so a wheel built from it gets them too. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
SHIPPED = {"search_spaces": "*.yaml", "tvm_targets": "*.json"}


def _shipped(folder: str) -> list[Path]:
    files = sorted((HERE / folder).glob(SHIPPED[folder]))
    if not files:  # a wheel without them would fail only when a user names one
        raise SystemExit(f"setup.py: no {SHIPPED[folder]} in {HERE / folder}")
    return files


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib, "canao", "_shipped")
        shutil.rmtree(dest, ignore_errors=True)  # no file removed upstream lingers in build/
        for folder in SHIPPED:
            self.mkpath(str(dest / folder))
            for src in _shipped(folder):
                self.copy_file(str(src), str(dest / folder / src.name))


class SdistWithShipped(sdist):
    def make_distribution(self) -> None:
        for folder in SHIPPED:
            self.filelist.extend(str(p.relative_to(HERE)) for p in _shipped(folder))
        super().make_distribution()


setup(cmdclass={"build_py": BuildPyWithShipped, "sdist": SdistWithShipped})
