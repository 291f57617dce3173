"""Lowering to Relax, building for a target, measuring; the only package that imports TVM.

The heavy work runs in :mod:`canao.compile.worker` child processes; this module only
starts them, so importing it costs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from canao.errors import CandidateError, TargetError
from canao.targets import TargetProfile


def check_target(profile: TargetProfile) -> str:
    """Raise :class:`TargetError` unless TVM accepts the profile's target; return it as text."""
    from canao.compile._build import resolve_target

    return str(resolve_target(profile.target))


def fidelity(profile: TargetProfile, *, final: bool = False) -> tuple[str, int | None]:
    """The rung label a build at this profile produces, and its trials per task.

    ``None`` trials means an untuned build; 0 means the shared database is applied as it
    is (``transferred``). Every stored latency carries this label.
    """
    t = profile.tuning
    if final:
        return f"final-{t.final_trials_per_task}", t.final_trials_per_task
    if t.rung == "untuned":
        return "untuned", None
    if t.rung == "transferred":
        return "transferred", 0
    return f"tuned-{t.trials_per_task}", t.trials_per_task


def compile_and_measure(onnx_path: Path, out_dir: Path, profile: TargetProfile, *,
                        input_shape: tuple[int, ...], input_dtype: str, input_name: str,
                        reference_x: Path, reference_logits: Path,
                        db_dir: Path | None = None, final: bool = False) -> dict[str, Any]:
    """Build ``onnx_path`` for ``profile`` into ``out_dir`` and time it, in a child process.

    Args:
        db_dir: the study's shared tuning database for this target (needed unless the
            profile's rung is ``untuned``).
        final: tune with the profile's final budget (for export) instead of its rung.

    Raises:
        CandidateError: the build or measurement failed, crashed or ran past the
            profile's ``build.timeout_s``; the message carries the reason.
    """
    label, trials = fidelity(profile, final=final)
    tuning = None
    if trials is not None:
        if db_dir is None:
            raise ValueError(f"a {label} build needs the study's tuning database folder")
        t = profile.tuning
        tuning = {"db_dir": str(db_dir), "trials_per_task": trials,
                  "trials_per_iter": t.trials_per_iter,
                  "runner": {"number": t.runner_number, "repeat": 1,
                             "min_repeat_ms": t.runner_min_repeat_ms}}
    request = {
        "onnx": str(onnx_path), "out_dir": str(out_dir), "target": profile.target,
        "fidelity": label, "tuning": tuning,
        "device": profile.device_type, "measure": profile.to_dict()["measure"],
        "input_shape": list(input_shape), "input_dtype": input_dtype, "input_name": input_name,
        "reference_x": str(reference_x), "reference_logits": str(reference_logits),
    }
    req_path = out_dir / "request.json"
    req_path.write_text(json.dumps(request, indent=2))
    result_path = out_dir / "result.json"
    result_path.unlink(missing_ok=True)
    env = {**os.environ, "TVM_NUM_THREADS": str(profile.threads)}
    try:
        proc = subprocess.run([sys.executable, "-m", "canao.compile.worker", str(req_path)],
                              env=env, capture_output=True, text=True,
                              timeout=profile.build.timeout_s)
    except subprocess.TimeoutExpired as e:
        raise CandidateError(f"build and measurement ran past {profile.build.timeout_s:g} s") from e
    (out_dir / "worker.log").write_text(proc.stdout + proc.stderr)
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if proc.returncode != 0 or "error" in result:
        reason = result.get("error") or _last_line(proc.stderr) or f"exit code {proc.returncode}"
        if proc.returncode < 0:
            reason = f"worker killed by signal {-proc.returncode}; {reason}"
        raise CandidateError(f"build failed: {reason}")
    return result


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


__all__ = ["CandidateError", "TargetError", "check_target", "compile_and_measure", "fidelity"]
