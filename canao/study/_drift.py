"""Drift: a fixed sentinel model re-timed while a study runs (the profile's ``drift``).

The sentinel is the study's base, built once at the ``transferred`` rung into
``<artifacts>/<study>/sentinel/<device key>/`` and then only re-timed, so its readings
compare the machine with itself: a reading off the first by more than the profile's
threshold means the trials measured meanwhile ran on a slower (or faster) machine.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna

from canao._locks import file_lock
from canao.candidate import compile_folder, compile_model
from canao.compile.builder import BUILT_FILE
from canao.study import _provenance
from canao.study._study import CanaoStudy

log = logging.getLogger(__name__)


class Sentinel:
    """Times a study's sentinel when due and flags the trials measured under drift."""

    def __init__(self, cs: CanaoStudy, base: Any, reference_x: Any, db_dir: Any) -> None:
        self.cs, self.base, self.reference_x, self.db_dir = cs, base, reference_x, db_dir

    def check(self, trial: optuna.Trial) -> None:
        """Re-time the sentinel when ``drift.every_trials`` trials have finished since its
        last timing; flag ``trial`` while the latest timing is off the study's first by more
        than ``drift.threshold``. A sentinel that fails to build is logged, not fatal."""
        d = self.cs.profile.drift
        if not d.every_trials or not self.cs.storage_url:
            return
        readings = _provenance.drift(self.cs.storage_url, self.cs.name)
        finished = len(self.cs.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        ratio = readings[-1]["ratio"] if readings else None
        if ratio is None or finished - readings[-1]["finished_trials"] >= d.every_trials:
            try:
                # Workers on one machine share the sentinel's folder: one times it at a time.
                with file_lock(self.cs.artifacts / self.cs.name / "sentinel.lock"):
                    ratio = self._time(finished)
            except Exception as e:  # the sentinel informs; it never fails a trial
                log.warning("drift sentinel not timed: %s: %s", type(e).__name__, e)
        if ratio is None:
            return
        trial.set_user_attr("drift_ratio", ratio)
        if abs(ratio - 1) > d.threshold:
            trial.set_user_attr("drift_flagged", True)
            log.warning("trial %d measured while the sentinel runs at %.2fx its first timing "
                        "(drift.threshold %.2f): flagged", trial.number, ratio, d.threshold)

    def _time(self, finished: int) -> float:
        cs = self.cs
        assert cs.device is not None
        profile = dataclasses.replace(
            cs.profile, tuning=dataclasses.replace(cs.profile.tuning, rung="transferred"))
        folder = cs.artifacts / cs.name / "sentinel" / cs.device.key
        if (folder / BUILT_FILE).is_file():
            result = compile_folder(folder, folder, profile, device=cs.device,
                                    db_dir=self.db_dir, measure_only=True)
        else:
            result = compile_model(self.base, folder, profile, reference_x=self.reference_x,
                                   device=cs.device, db_dir=self.db_dir)
        latency = result["latency"]
        ratio = _provenance.add_drift(cs.storage_url, study_name=cs.name, identity=cs.device,
                                      finished_trials=finished,
                                      samples_ms=latency["samples_ms"],
                                      median_ms=latency["median_ms"])
        log.info("drift sentinel after %d finished trial(s): %.4f ms, %.3fx the first timing",
                 finished, latency["median_ms"], ratio)
        return ratio
