"""Devices reached through TVM's RPC tracker: wait for one, upload, run, time remotely."""

from __future__ import annotations

import time
from typing import Any

from canao.errors import CandidateError
from canao.targets import RemoteConfig


class DeviceError(CandidateError):
    """The remote device could not be reached, or its connection dropped (retryable)."""


def request_session(device: RemoteConfig) -> Any:
    """An RPC session on a device with the profile's key, from the tracker.

    A device that is registered but busy is waited for (the tracker queues the request by
    priority); a key that no device has registered fails after ``device_wait_s``.
    """
    from tvm import rpc as tvm_rpc

    host, port = device.address
    key = device.key
    try:
        tracker = tvm_rpc.connect_tracker(host, port)
    except (OSError, RuntimeError) as e:
        raise DeviceError(f"cannot reach RPC tracker {host}:{port}: {e}") from e
    deadline = time.monotonic() + device.device_wait_s
    try:
        while True:
            servers = tracker.summary().get("server_info", [])
            if any(s["key"].split(":", 1)[-1] == key for s in servers):
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"no device with key '{key}' is registered at tracker "
                                  f"{host}:{port} (waited {device.device_wait_s:g} s)")
            time.sleep(0.5)
        return tracker.request(key, priority=device.priority,
                               session_timeout=device.session_timeout_s, max_retry=2)
    except (OSError, RuntimeError) as e:
        raise DeviceError(f"device '{key}' at tracker {host}:{port}: "
                          f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    finally:
        tracker.close()


def is_connection_error(e: BaseException) -> bool:
    """Whether an exception from a remote call means the device went away."""
    text = f"{type(e).__name__}: {e}".lower()
    return isinstance(e, (OSError, ConnectionError)) or any(
        w in text for w in ("socket", "connection", "rpc", "broken pipe", "timed out", "closed"))
