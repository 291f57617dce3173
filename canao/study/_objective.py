"""One trial: sample an architecture, build the candidate, compile and measure it."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from canao.errors import CandidateError
from canao.study._study import CanaoStudy

log = logging.getLogger(__name__)

CANDIDATE_FILE = "candidate.pt"
REFERENCE_SAMPLES = 16  # validation images whose compiled outputs are checked against torch
PARITY_TOLERANCE = 1e-3  # compiled vs PyTorch logits; a larger gap means a broken build


class Objective:
    """Callable Optuna objective for a canao study (base and task are loaded once)."""

    def __init__(self, cs: CanaoStudy) -> None:
        from canao.compress import magnitude_scores
        from canao.models import load_or_train_base
        from canao.tasks import get_task

        self.cs = cs
        self.task = get_task(cs.space.task)
        self.base, self.base_info = load_or_train_base(cs.space, self.task)
        self.scores = magnitude_scores(self.base)  # the same ranking serves every candidate

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        arch = self.cs.space.sample(trial)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_key", arch.key())
        trial.set_user_attr("base", self.base_info["key"])
        try:
            return self._evaluate(trial, arch)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, CandidateError):
                reason = f"{type(e).__name__}: {reason}"
            trial.set_user_attr("error", reason[:1000])
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            log.warning("trial %d failed: %s", trial.number, reason)
            raise CandidateError(reason) from e

    def _evaluate(self, trial: optuna.Trial, arch: Any) -> tuple[float, float, float]:
        import torch

        from canao.compile import compile_and_measure
        from canao.compress import slice_encoder, train
        from canao.models import predict_logits
        from canao.models.onnx_export import INPUT_NAME, export_onnx
        from canao.tasks import accuracy

        space, profile = self.cs.space, self.cs.profile
        out = self.cs.artifacts / self.cs.name / f"trial-{trial.number:05d}"
        out.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("artifact_dir", str(out))
        t0 = time.perf_counter()
        model, kept = slice_encoder(self.base, arch, self.scores)
        trial.set_user_attr("kept", kept.to_dict())
        rec = space.candidate.recovery
        torch.manual_seed(space.candidate.seed)
        train(model, self.task.split("train"), steps=rec.steps, batch_size=rec.batch_size,
              lr=rec.lr, seed=space.candidate.seed, teacher=self.base,
              alpha=rec.distill_alpha, temperature=rec.temperature)
        val = self.task.split("validation")
        acc = accuracy(predict_logits(model, val.x).numpy(), val.y)
        torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()},
                   out / CANDIDATE_FILE)
        build_s = time.perf_counter() - t0

        batch = profile.measure.batch_size
        export_onnx(model, out / "model.onnx", batch_size=batch)
        ref_x = val.x[:REFERENCE_SAMPLES]
        np.save(out / "reference_x.npy", ref_x)
        np.save(out / "reference_logits.npy", predict_logits(model, ref_x).numpy())
        result = compile_and_measure(
            out / "model.onnx", out, profile, input_shape=model.config.input_shape(batch),
            input_dtype=model.config.input_dtype, input_name=INPUT_NAME,
            reference_x=out / "reference_x.npy", reference_logits=out / "reference_logits.npy")
        if result["max_abs_error"] > PARITY_TOLERANCE:
            raise CandidateError(f"compiled outputs differ from PyTorch by "
                                 f"{result['max_abs_error']:.3g} (> {PARITY_TOLERANCE})")
        latency = result["latency"]
        memory_bytes = result["param_bytes"] + result["workspace_bytes"]
        for key, value in {
            "fidelity": result["fidelity"], "latency": latency,
            "param_bytes": result["param_bytes"], "workspace_bytes": result["workspace_bytes"],
            "library_bytes": result["library_bytes"], "parameters": model.num_parameters(),
            "max_abs_error": result["max_abs_error"], "target": result["target"],
            "tvm_version": result["tvm_version"], "machine": result["machine"],
            "timings_s": {"candidate": build_s, "import": result["import_s"],
                          "compile": result["compile_s"], "measure": result["measure_s"]},
        }.items():
            trial.set_user_attr(key, value)
        values = (acc, latency["median_ms"], memory_bytes / 1e6)
        log.info("trial %d %s: accuracy %.4f, %.3f ms (p95 %.3f, %s), %.3f MB",
                 trial.number, arch.describe(), acc, latency["median_ms"], latency["p95_ms"],
                 result["fidelity"], values[2])
        return values


def run(cs: CanaoStudy, *, n_trials: int | None, timeout: float | None,
        progress: bool = True) -> int:
    """Run trials on ``cs``; returns how many finished. A failing candidate fails its trial."""
    from tqdm import tqdm

    objective = Objective(cs)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cs.study.sampler = cs.sampler_for_run()
    before = _complete(cs)
    bar = tqdm(total=n_trials, desc=f"study {cs.name}", unit="trial", disable=not progress)

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if trial.values:
            bar.set_postfix(acc=f"{trial.values[0]:.3f}", ms=f"{trial.values[1]:.3f}")

    try:
        cs.study.optimize(objective, n_trials=n_trials, timeout=timeout,
                          catch=(CandidateError,), callbacks=[tick], gc_after_trial=True)
    finally:
        bar.close()
    return _complete(cs) - before


def _complete(cs: CanaoStudy) -> int:
    return len(cs.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def artifact_dir(trial: optuna.trial.FrozenTrial) -> Path:
    return Path(trial.user_attrs["artifact_dir"])
