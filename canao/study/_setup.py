"""One search set-up, shared by ``canao search`` and the service's create-study route.

Everything a user could have got wrong (the space, its task and data, the target, the
study name, the budgets) is checked and the device resolved *before* the database is
touched; only then is the study created.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from canao.compile import check_target, resolve_device
from canao.db import Heartbeat
from canao.space import Budgets, SearchSpace, check_task, parse_space
from canao.study._study import CanaoStudy, check_study_name, create, with_overrides
from canao.targets import DeviceIdentity, TargetProfile


@dataclass(frozen=True)
class SearchPlan:
    """A checked search, ready to become a study (see :func:`plan_search`)."""

    name: str
    space: SearchSpace
    space_text: str  # what is stored with the study (and re-parsed by resume)
    profile: TargetProfile
    device: DeviceIdentity
    budgets: Budgets

    def create(self, storage_url: str, *, artifacts: Path, seed: int,
               heartbeat: Heartbeat | None = None) -> CanaoStudy:
        return create(self.name, storage_url, space_text=self.space_text, space=self.space,
                      profile=self.profile, device=self.device, artifacts=artifacts, seed=seed,
                      budgets=self.budgets, heartbeat=heartbeat)


def with_task(space: SearchSpace, task: str | None,
              columns: dict[str, str | None]) -> tuple[SearchSpace, str]:
    """The space with another task (a file task's path made absolute) and its YAML to store."""
    name = task or space.task
    kind, sep, path = name.partition(":")
    if sep and kind in ("csv", "jsonl") and path:
        name = f"{kind}:{Path(path).expanduser().resolve()}"
    data = {**dataclasses.asdict(space.data), **{k: v for k, v in columns.items() if v}}
    d = {**space.to_dict(), "task": name, "data": data}
    d.pop("name", None)
    text = yaml.safe_dump(d, sort_keys=False)
    return parse_space(text, where="the space with --task", name=space.name), text


def plan_search(space: SearchSpace, space_text: str, profile: TargetProfile, *,
                name: str | None = None, **budgets: float | None) -> SearchPlan:
    """Check a search and resolve its device; raises a :class:`CanaoError` naming the fault.

    Args:
        name: the study's name [default: SPACE-TARGET-TIMESTAMP].
        budgets: overrides of the space's ``study.budgets`` (``None``: keep the space's).
    """
    check_task(space)
    check_target(profile)
    device = resolve_device(profile)
    name = name or f"{space.name}-{profile.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_study_name(name)
    return SearchPlan(name, space, space_text, profile, device,
                      with_overrides(space.study.budgets, **budgets))
