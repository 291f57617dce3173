"""Resolving a target profile into the device identity it means on this machine (TVM)."""

from __future__ import annotations

from typing import Any

import tvm
from tvm.target import codegen

from canao.compile._build import compiled_features, resolve_target
from canao.compile._remote import request_session
from canao.measure import cpu_model
from canao.targets import DeviceIdentity, TargetProfile


def host_cpu() -> str:
    """The LLVM name of this machine's CPU (what ``"mcpu": "host"`` means here)."""
    return str(codegen.llvm_get_system_cpu())


def resolve_device(profile: TargetProfile, *, mcpu: str | None = None) -> DeviceIdentity:
    """The identity of the device ``profile`` builds for and measures on, from here.

    Args:
        mcpu: build for this named CPU instead of the profile's (``canao export --cpu``).

    For an RPC profile the CPU is the remote device's, read through a session (so the
    device must be registered with the tracker); ``"mcpu": "host"`` then means its CPU.
    """
    spec: dict[str, Any] = dict(profile.target)
    if mcpu:
        spec["mcpu"] = mcpu
    where, cpu = "local", cpu_model()
    if profile.rpc is not None:
        remote_cpu = _remote_cpu(profile)
        where, cpu = f"rpc:{profile.rpc.key}", f"{remote_cpu} ({profile.rpc.key})"
        if spec.get("mcpu") == "host":
            spec["mcpu"] = remote_cpu
    elif spec.get("mcpu") == "host":
        spec["mcpu"] = host_cpu()
    target = resolve_target(spec)
    if target.kind.name != "llvm":
        cpu = _device_name(target.kind.name) if profile.rpc is None else cpu
    llvm = codegen.llvm_version_major() if hasattr(codegen, "llvm_version_major") else "?"
    return DeviceIdentity(target=spec, features=compiled_features(target), cpu=cpu,
                          threads=profile.threads, tvm=str(tvm.__version__), llvm=str(llvm),
                          where=where)


def _remote_cpu(profile: TargetProfile) -> str:
    assert profile.rpc is not None
    session = request_session(profile.rpc)
    try:
        return str(session.get_function("target.llvm_get_system_cpu")())
    except Exception:  # a runtime-only server has no LLVM: name the device by its key
        return "unknown-cpu"


def _device_name(kind: str) -> str:
    """A GPU's name (``NVIDIA H200``); the kind alone where no such device is here."""
    try:
        dev = tvm.device(kind, 0)
        return str(dev.device_name) if dev.exist else f"no {kind} device"
    except Exception:
        return kind
