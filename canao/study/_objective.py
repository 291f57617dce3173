"""One trial: sample an architecture, build the candidate, compile and measure it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from canao import __version__, _config
from canao._locks import file_lock
from canao.errors import CandidateError, StorageError
from canao.space import ArchConfig, CandidateSpec
from canao.study import _provenance
from canao.study._study import CanaoStudy, check_device
from canao.targets import DeviceIdentity, TargetProfile

log = logging.getLogger(__name__)

# Bump when building a candidate changes what a cached measurement would be
# (2: token embeddings take the trial's weight storage; 3: int8-dynamic weights in 7 bits).
CANDIDATE_RECIPE = 3

CANDIDATE_FILE = "candidate.pt"
MEASUREMENT_FILE = "measurement.json"  # written last: its presence marks a complete artifact
REFERENCE_SAMPLES = 16  # validation images whose compiled outputs are checked against torch


def _check_same_base(cs: CanaoStudy, task: Any) -> None:
    """Refuse to add trials built from another base than the study's earlier ones (the task's
    data file, the base recipe or torch changed): their accuracies would not be comparable."""
    from canao.errors import StorageError
    from canao.models import base_key

    key = base_key(cs.space, task)
    done = cs.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    earlier = {t.user_attrs["base"] for t in done if "base" in t.user_attrs}
    if earlier and key not in earlier:
        raise StorageError(
            f"study '{cs.name}' was searched with base {', '.join(sorted(earlier))}, but its "
            f"task data, base recipe or torch version now give base {key}; trials from both "
            "would not be comparable: start a new study")


class Objective:
    """Callable Optuna objective for a canao study (base and task are loaded once)."""

    def __init__(self, cs: CanaoStudy) -> None:
        from canao.compile import resolve_device
        from canao.compress.importance import importance_scores
        from canao.models import load_or_train_base
        from canao.tasks import load_task

        self.cs = cs
        if cs.device is None:  # a study older than device identities: it takes this one
            check_device(cs, resolve_device(cs.profile))
        assert cs.device is not None
        self.device = cs.device
        self.task = load_task(cs.space)
        self._teacher_logits: Any = None
        self.interrupted: Callable[[], bool] = lambda: False  # set by run()
        _check_same_base(cs, self.task)
        self.base, self.base_info = load_or_train_base(cs.space, self.task)
        # One ranking of the base's units serves every candidate of the study.
        self.scores, self.importance = importance_scores(
            self.base, self.base_info["key"], self.task.split("train"), cs.space.candidate)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        self.check_drift(trial)
        arch = self.cs.space.sample(trial)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_key", arch.key())
        trial.set_user_attr("base", self.base_info["key"])
        trial.set_user_attr("base_accuracy", self.base_info["validation_accuracy"])
        trial.set_user_attr("importance", self.cs.space.candidate.importance)
        try:
            values = self._evaluate(trial, arch)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not isinstance(e, CandidateError):
                reason = f"{type(e).__name__}: {reason}"
            trial.set_user_attr("error", reason[:1000])
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            log.warning("trial %d failed: %s", trial.number, reason)
            raise CandidateError(reason) from e
        self.check_interrupt()  # a Ctrl-C that native code swallowed still fails the trial
        return values

    def check_drift(self, trial: optuna.Trial) -> None:
        """Re-time the sentinel (the base) when ``drift.every_trials`` trials have finished
        since its last timing; flag ``trial`` while the latest timing is off the study's
        first by more than ``drift.threshold``. A sentinel that fails is logged, not fatal."""
        d = self.cs.profile.drift
        if not d.every_trials or not self.cs.storage_url:
            return
        readings = _provenance.drift(self.cs.storage_url, self.cs.name)
        finished = _complete(self.cs)
        ratio = readings[-1]["ratio"] if readings else None
        if ratio is None or finished - readings[-1]["finished_trials"] >= d.every_trials:
            try:
                ratio = self._time_sentinel(finished)
            except CandidateError as e:
                log.warning("drift sentinel not timed: %s", e)
        if ratio is None:
            return
        trial.set_user_attr("drift_ratio", ratio)
        if abs(ratio - 1) > d.threshold:
            trial.set_user_attr("drift_flagged", True)
            log.warning("trial %d measured while the sentinel runs at %.2fx its first timing "
                        "(drift.threshold %.2f): flagged", trial.number, ratio, d.threshold)

    def _time_sentinel(self, finished: int) -> float:
        """Time the study's sentinel (built once: the base at the transferred rung)."""
        import dataclasses

        from canao.compile import compile_and_measure
        from canao.compile.worker import BUILT_FILE
        from canao.models import predict_logits
        from canao.models.onnx_export import INPUT_NAME, export_onnx

        cs = self.cs
        profile = dataclasses.replace(
            cs.profile, tuning=dataclasses.replace(cs.profile.tuning, rung="transferred"))
        folder = cs.artifacts / cs.name / "sentinel" / self.device.key
        built = (folder / BUILT_FILE).is_file()
        if not built:
            folder.mkdir(parents=True, exist_ok=True)
            export_onnx(self.base, folder / "model.onnx", batch_size=profile.measure.batch_size)
            ref_x = self.task.split("validation").x[:REFERENCE_SAMPLES]
            np.save(folder / "reference_x.npy", ref_x)
            np.save(folder / "reference_logits.npy", predict_logits(self.base, ref_x).numpy())
        batch = profile.measure.batch_size
        result = compile_and_measure(
            folder / "model.onnx", folder, profile,
            input_shape=self.base.config.input_shape(batch),
            input_dtype=self.base.config.input_dtype, input_name=INPUT_NAME,
            reference_x=folder / "reference_x.npy",
            reference_logits=folder / "reference_logits.npy", db_dir=tuning_dir(cs),
            device=self.device, measure_only=built)
        latency = result["latency"]
        ratio = _provenance.add_drift(cs.storage_url, study_name=cs.name, identity=self.device,
                                      finished_trials=finished,
                                      samples_ms=latency["samples_ms"],
                                      median_ms=latency["median_ms"])
        log.info("drift sentinel after %d finished trial(s): %.4f ms, %.3fx the first timing",
                 finished, latency["median_ms"], ratio)
        return ratio

    def check_interrupt(self) -> None:
        if self.interrupted():
            raise KeyboardInterrupt

    def teacher_logits(self) -> Any:
        """The base's logits on the training split, computed once per process."""
        if self._teacher_logits is None:
            from canao.models import predict_logits

            self._teacher_logits = predict_logits(self.base, self.task.split("train").x)
        return self._teacher_logits

    def candidate_key(self, arch: Any) -> str:
        """Content key of a measured candidate: same key, same model, build and measurement.

        It covers what determines the result: the base (task data, shape, recipe), the
        architecture, the candidate recipe (importance, recovery), the resolved device
        (target with its CPU, features, CPU model, threads, TVM and LLVM versions), the
        timing protocol and tuning rung, and the canao version. "host" is never in it.
        The tuning database is not in the key: a candidate's workloads are tuned (or found
        tuned) when it is first built and are never re-tuned at that rung, so later records
        for other workloads cannot change its build. Its digest is stored with the result.
        """
        return candidate_key(self.base_info["key"], arch, self.cs.space.candidate,
                             self.cs.profile, self.device)

    def _evaluate(self, trial: optuna.Trial, arch: Any) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        key = self.candidate_key(arch)
        folder = self.cs.artifacts / "cache" / key
        trial.set_user_attr("artifact_key", key)
        trial.set_user_attr("artifact_dir", str(folder))
        # One builder per key at a time: a second worker drawing the same candidate waits
        # and then reads the first one's result instead of building it again.
        with file_lock(self.cs.artifacts / "cache" / f"{key}.lock"):
            record_path = folder / MEASUREMENT_FILE
            hit = record_path.is_file()
            if hit:
                record = json.loads(record_path.read_text())
            else:
                folder.mkdir(parents=True, exist_ok=True)
                record = self._build(arch, folder)
                record_path.write_text(json.dumps(record, indent=2))
        elapsed = time.perf_counter() - t0
        result = record["result"]
        latency = result["latency"]
        memory_bytes = result["param_bytes"] + result["workspace_bytes"]
        for k, value in {
            "fidelity": result["fidelity"], "latency": latency, "noisy": latency.get("noisy"),
            "kept": record["kept"], "parameters": record["parameters"],
            "compression": record.get("compression"),
            "param_bytes": result["param_bytes"], "workspace_bytes": result["workspace_bytes"],
            "library_bytes": result["library_bytes"], "max_abs_error": result["max_abs_error"],
            "target": result["target"], "tvm_version": result["tvm_version"],
            "device_key": self.device.key,
            "machine": result["machine"], "tuning": result.get("tuning", {}),
            "cache_hit": hit, "build_s": elapsed,
            "timings_s": {**record["timings_s"], "import": result["import_s"],
                          "compile": result["compile_s"], "measure": result["measure_s"]},
        }.items():
            trial.set_user_attr(k, value)
        if self.cs.storage_url:
            p = self.cs.profile
            _provenance.record(
                self.cs.storage_url, study_name=self.cs.name,
                trial_id=trial._trial_id, trial_number=trial.number, key=key, folder=folder,
                profile_name=p.name, device=p.rpc.key if p.rpc else "local", measured=record,
                cache_hit=hit, identity=self.device)
        values = (record["accuracy"], latency["median_ms"], memory_bytes / 1e6)
        if self.cs.budgets.active():
            trial.set_user_attr("violations", self.cs.budgets.violations(
                *values, self.base_info["validation_accuracy"]))
        tuned = result.get("tuning", {})
        if hit:
            log.info("trial %d %s: cache hit (%s), %.3f s", trial.number, arch.describe(), key,
                     elapsed)
        log.info("trial %d %s: accuracy %.4f, %.4f ms (p95 %.4f, %s%s), %.3f MB%s",
                 trial.number, arch.describe(), values[0], latency["median_ms"],
                 latency["p95_ms"], result["fidelity"], ", noisy" if latency.get("noisy") else "",
                 values[2], "" if hit or not tuned else
                 f"; tuned {tuned.get('tuned_tasks', 0)}/{tuned.get('tasks', 0)} workloads "
                 f"in {tuned.get('tuning_s', 0):.1f} s")
        return values

    def _build(self, arch: Any, out: Path) -> dict[str, Any]:
        import torch

        from canao.compile import compile_and_measure
        from canao.compress import slice_encoder, train
        from canao.compress.deploy import compressed_bytes, deploy, parity_tolerance
        from canao.models import predict_logits
        from canao.models.onnx_export import INPUT_NAME, export_onnx
        from canao.tasks import accuracy

        space, profile = self.cs.space, self.cs.profile
        t0 = time.perf_counter()
        model, kept = slice_encoder(self.base, arch, self.scores)
        rec = space.candidate.recovery
        torch.manual_seed(space.candidate.seed)
        train(model, self.task.split("train"), steps=rec.steps, batch_size=rec.batch_size,
              lr=rec.lr, seed=space.candidate.seed, teacher=self.teacher_logits(),
              alpha=rec.distill_alpha, temperature=rec.temperature)
        self.check_interrupt()
        # Weight storage (int8, clustering) is applied after recovery; the deployed module
        # computes exactly what the compiled graph does, so its accuracy is the compiled one.
        deployed = deploy(model, arch.weights, arch.clusters)
        val = self.task.split("validation")
        acc = accuracy(predict_logits(deployed, val.x).numpy(), val.y)
        torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict(),
                    "weights": arch.weights, "clusters": arch.clusters}, out / CANDIDATE_FILE)
        candidate_s = time.perf_counter() - t0

        batch = profile.measure.batch_size
        export_onnx(deployed, out / "model.onnx", batch_size=batch)
        ref_x = val.x[:REFERENCE_SAMPLES]
        np.save(out / "reference_x.npy", ref_x)
        np.save(out / "reference_logits.npy", predict_logits(deployed, ref_x).numpy())
        result = compile_and_measure(
            out / "model.onnx", out, profile, input_shape=model.config.input_shape(batch),
            input_dtype=model.config.input_dtype, input_name=INPUT_NAME,
            reference_x=out / "reference_x.npy", reference_logits=out / "reference_logits.npy",
            db_dir=tuning_dir(self.cs), device=self.device)
        tolerance = parity_tolerance(arch.weights)
        if result["max_abs_error"] > tolerance:
            raise CandidateError(f"compiled outputs differ from PyTorch by "
                                 f"{result['max_abs_error']:.3g} (> {tolerance})")
        return {"accuracy": acc, "kept": kept.to_dict(), "parameters": model.num_parameters(),
                "arch": arch.to_dict(), "timings_s": {"candidate": candidate_s},
                "compression": {"weights": arch.weights, "clusters": arch.clusters,
                                "block_weight_bytes": compressed_bytes(deployed)},
                "result": result}


def candidate_key(base_key: str, arch: ArchConfig, candidate: CandidateSpec,
                  profile: TargetProfile, device: DeviceIdentity) -> str:
    """Content key of a candidate built from ``base_key`` and measured on ``device``
    (see :meth:`Objective.candidate_key`)."""
    from canao.compile import fidelity

    blob = json.dumps({
        "base": base_key, "arch": arch.to_dict(), "candidate": _config.to_dict(candidate),
        "device": device.to_dict(), "measure": _config.to_dict(profile.measure),
        "fidelity": fidelity(profile)[0], "canao": __version__, "recipe": CANDIDATE_RECIPE,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def tuning_dir(cs: CanaoStudy) -> Path:
    """The MetaSchedule database of the study's device, shared with every study on it."""
    from canao.compile import device_tuning_dir

    if cs.device is None:
        raise StorageError(f"study '{cs.name}' has no device identity yet; resume it once "
                           "on its device to record one")
    return device_tuning_dir(cs.device)


def run(cs: CanaoStudy, *, n_trials: int | None, timeout: float | None,
        progress: bool = True, salt: int = 0, take_sigint: bool = False) -> int:
    """Run trials on ``cs``; returns how many finished. A failing candidate fails its trial.

    Ctrl-C (SIGINT) fails the running trial and stops the run with KeyboardInterrupt. A
    process started with SIGINT ignored keeps ignoring it unless ``take_sigint``.
    """
    from tqdm import tqdm

    if cs.storage_url:
        _provenance.engine_for(cs.storage_url)  # schema current before the first trial
    objective = Objective(cs)
    cs.study.sampler = cs.sampler_for_run(salt)
    before = _complete(cs)
    bar = tqdm(total=n_trials, desc=f"study {cs.name}", unit="trial", disable=not progress)

    def tick(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        if trial.values:
            bar.set_postfix(acc=f"{trial.values[0]:.3f}", ms=f"{trial.values[1]:.3f}")
        if objective.interrupted():
            study.stop()

    try:
        with _interrupts(take_sigint) as objective.interrupted:
            cs.study.optimize(objective, n_trials=n_trials, timeout=timeout,
                              catch=(CandidateError,), callbacks=[tick], gc_after_trial=True)
            if objective.interrupted():
                raise KeyboardInterrupt
    finally:
        bar.close()
    return _complete(cs) - before


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``docker stop``, a service shutting down): the running trial fails
    at once, like Ctrl-C, and the process exits with 143 (128 + SIGTERM)."""


@contextlib.contextmanager
def _interrupts(take: bool) -> Iterator[Callable[[], bool]]:
    """Remember a Ctrl-C or SIGTERM as well as raising KeyboardInterrupt for it.

    Code inside a trial that catches the KeyboardInterrupt (native code polls Python's
    signals mid-call: TVM's FFI registers PyErr_CheckSignals for that) cannot make the run
    go on: the remembered flag still fails the trial and stops the run. Python's own SIGINT
    handler is replaced only where it is installed, or where ``take`` says to replace any
    (SIG_IGN is inherited by a background job of a non-interactive shell, and by its
    children). SIGTERM is always taken: its default action would kill the process with its
    trial left RUNNING until a heartbeat grace period passes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    seen = threading.Event()
    terminated = threading.Event()

    def on_sigint(signum: int, frame: Any) -> None:
        seen.set()
        signal.default_int_handler(signum, frame)

    def on_sigterm(signum: int, frame: Any) -> None:
        seen.set()
        terminated.set()
        raise Terminated

    take_int = take or signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous_int = signal.signal(signal.SIGINT, on_sigint) if take_int else None
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)

    def interrupted() -> bool:
        if terminated.is_set():
            raise Terminated
        return seen.is_set()

    try:
        yield interrupted
    finally:
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)


def _complete(cs: CanaoStudy) -> int:
    return len(cs.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def artifact_dir(trial: optuna.trial.FrozenTrial) -> Path:
    return Path(trial.user_attrs["artifact_dir"])
