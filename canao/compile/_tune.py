"""MetaSchedule tuning with one JSON database per study and target, shared by all candidates.

Candidates of one space share most operator shapes (a workload is keyed by the structural
hash of its fused TIR), so a new candidate tunes only the workloads the database lacks.

Two costs dominate MetaSchedule on a small CPU and both are avoided here:

* ``LocalBuilder`` starts a fresh process pool for every batch and each worker imports
  ``tvm.s_tir.tensor_intrin`` (tens of seconds). :class:`InProcessBuilder` builds in the
  tuning process itself, paying that import once. A crashing build would take the tuner
  down with it; the tuner runs in the candidate's worker process, so that costs one trial.
* Concurrent tuners must not interleave writes to one database: an exclusive file lock
  around each candidate's tune-and-commit keeps the JSON files whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder import local_builder as _lb

from canao._locks import file_lock

log = logging.getLogger(__name__)

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
ATTEMPTED = "attempted.json"  # workloads already tuned with a budget, records or not


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds MetaSchedule candidates in the calling process (no pool, no re-imports)."""

    def build(self, build_inputs: list[Any]) -> list[Any]:
        out = []
        for bi in build_inputs:
            try:
                lib = _lb.default_build(bi.mod, bi.target, None)
                out.append(BuilderResult(_lb.default_export(lib), None))
            except Exception as e:  # a candidate schedule that does not build: tuner moves on
                out.append(BuilderResult(None, f"build failed: {type(e).__name__}: {e}"))
        return out


def prepare(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalise and fuse the module: what task extraction and the database see."""
    with target:
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.pipeline.zero_pipeline(),
        ])(mod)


def open_database(db_dir: Path) -> Any:
    return ms.database.JSONDatabase(path_workload=str(db_dir / WORKLOADS),
                                    path_tuning_record=str(db_dir / RECORDS),
                                    allow_missing=True)


def database_digest(db_dir: Path) -> str:
    """Digest of the database files (empty database: digest of nothing)."""
    h = hashlib.sha256()
    for name in (WORKLOADS, RECORDS):
        p = db_dir / name
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def tune_and_apply(mod: tvm.IRModule, target: tvm.target.Target, db_dir: Path, *,
                   trials_per_task: int, trials_per_iter: int, runner_config: dict[str, Any],
                   seed: int = 0) -> tuple[tvm.IRModule, dict[str, Any]]:
    """Tune the workloads of ``mod`` the shared database lacks, then apply the database.

    Args:
        trials_per_task: measured schedule candidates per missing workload; 0 only applies
            the records already there ("transferred").
        trials_per_iter: candidates per search round (one builder and runner batch).
        runner_config: ``number``, ``repeat``, ``min_repeat_ms`` for MetaSchedule's runner.

    Returns:
        The module with tuned schedules applied (ready for ``tvm.compile``) and statistics:
        tasks, tasks covered before, tasks tuned, trials, tuning seconds, database digest.
    """
    prepared = prepare(mod, target)
    tasks = ms.relax_integration.extract_tasks(prepared, target)
    with file_lock(db_dir / ".lock"):
        db = open_database(db_dir)
        attempted = _read_attempted(db_dir)
        # A workload is missing if the database has no record for it and it was never
        # tuned with at least this budget (some workloads yield no valid schedule at all;
        # they must not be re-tuned by every candidate).
        missing = [t for t in tasks
                   if db.query_tuning_record(t.dispatched[0], target, t.task_name) is None
                   and attempted.get(_task_key(t, target), 0) < trials_per_task]
        stats: dict[str, Any] = {"tasks": len(tasks), "covered_before": len(tasks) - len(missing),
                                 "tuned_tasks": 0, "trials": 0, "tuning_s": 0.0}
        if missing and trials_per_task > 0:
            t0 = time.perf_counter()
            work = db_dir / "work"
            work.mkdir(exist_ok=True)
            ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                missing, str(work), seed=seed, num_threads=1)
            budget = trials_per_task * len(missing)
            runner = ms.runner.LocalRunner(
                timeout_sec=60, evaluator_config=ms.runner.EvaluatorConfig(**runner_config))
            ms.tune_tasks(tasks=ctxs, task_weights=weights, work_dir=str(work),
                          max_trials_global=budget, max_trials_per_task=trials_per_task,
                          num_trials_per_iter=min(trials_per_iter, trials_per_task),
                          builder=InProcessBuilder(), runner=runner, database=db)
            stats.update(tuned_tasks=len(missing), trials=budget,
                         tuning_s=time.perf_counter() - t0)
            for t in missing:
                attempted[_task_key(t, target)] = trials_per_task
            (db_dir / ATTEMPTED).write_text(json.dumps(attempted, indent=0, sort_keys=True))
        covered = sum(db.query_tuning_record(t.dispatched[0], target, t.task_name) is not None
                      for t in tasks)
        stats["covered_after"] = int(covered)
        stats["database_digest"] = database_digest(db_dir)
        applied = _apply(prepared, db, target)
    return applied, stats


def _task_key(task: Any, target: tvm.target.Target) -> str:
    return f"{tvm_ffi.structural_hash(task.dispatched[0]) & 0xFFFFFFFFFFFF:x}:{target.kind.name}"


def _read_attempted(db_dir: Path) -> dict[str, int]:
    p = db_dir / ATTEMPTED
    return json.loads(p.read_text()) if p.is_file() else {}


def _apply(prepared: tvm.IRModule, db: Any, target: tvm.target.Target) -> tvm.IRModule:
    with target, db:
        return relax.transform.MetaScheduleApplyDatabase()(prepared)
