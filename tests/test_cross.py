"""Cross-compiling for a 64-bit Arm board with the shipped aarch64 profile."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from canao.compile._build import build
from canao.compress.onnx_export import export_onnx
from canao.models import Encoder, EncoderConfig
from canao.targets import load_profile

EM_AARCH64 = 183  # ELF e_machine of AArch64


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", "not an ELF file"
    endian = "<" if head[5] == 1 else ">"
    return struct.unpack(endian + "H", head[18:20])[0]


def test_aarch64_profile_builds_an_aarch64_library(tmp_path: Path) -> None:
    profile = load_profile("aarch64-linux")
    if not shutil.which(profile.build.cc):
        reason = f"{profile.build.cc} not installed (Debian: g++-aarch64-linux-gnu; `make` installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason=f"cross compiler not available: {reason}")
    config = EncoderConfig(num_classes=10, hidden=16, heads=(1,), ffn=(16,), head_dim=16)
    torch.manual_seed(0)
    export_onnx(Encoder(config), tmp_path / "model.onnx")
    info = build(tmp_path / "model.onnx", tmp_path, profile.target, cc=profile.build.cc)
    assert _elf_machine(tmp_path / "model.so") == EM_AARCH64
    assert "aarch64" in info["target"]
