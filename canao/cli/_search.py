"""Commands that run trials: search, resume, worker; and slim (gates trained ahead)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from canao.cli._base import (
    STORAGE_HELP,
    _budget_options,
    _run_and_report,
    _storage,
    cli,
    log,
)
from canao.errors import CanaoError


@cli.command()
@click.option("--space", "space_path", required=True, help="Search-space YAML (or a shipped name).")
@click.option("--target", "target_path", required=True, help="Target profile JSON (or a shipped name).")
@click.option("--study", "study_name", help="Study name [default: SPACE-TARGET-TIMESTAMP].")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Stop after S seconds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for compiled artifacts [default: $CANAO_ARTIFACTS or ./canao_artifacts].")
@click.option("--task", "task_name",
              help="Task overriding the space's: a built-in name, csv:PATH or jsonl:PATH.")
@click.option("--text-column", help="Text column of a csv:/jsonl: task [default: text].")
@click.option("--label-column", help="Label column of a csv:/jsonl: task [default: label].")
@click.option("--group-column",
              help="Rows sharing this column's value stay in one split (e.g. a document id).")
@_budget_options("Budget overriding the space file's 'study.budgets' (stored with the study).")
@click.pass_obj
def search(obj: dict[str, Any], space_path: str, target_path: str, study_name: str | None,
           storage: str | None, trials: int, timeout: float | None, seed: int,
           artifacts: Path | None, task_name: str | None, text_column: str | None,
           label_column: str | None, group_column: str | None, **budgets: float | None) -> None:
    """Start a new search on a device target."""
    from canao import db
    from canao import study as st
    from canao.space import load_space, resolve_shipped
    from canao.targets import load_profile

    space = load_space(space_path)
    space_text = resolve_shipped(space_path, "search_spaces", ".yaml", CanaoError, "").read_text()
    columns = {"text_column": text_column, "label_column": label_column,
               "group_column": group_column}
    if task_name or any(columns.values()):
        space, space_text = st.with_task(space, task_name, columns)
    plan = st.plan_search(space, space_text, load_profile(target_path), name=study_name,
                          **budgets)
    folder = artifacts or Path(os.environ.get("CANAO_ARTIFACTS", "canao_artifacts"))
    url = _storage(storage)
    with db.sole_sqlite_worker(url):
        cs = plan.create(url, artifacts=folder, seed=seed, heartbeat=db.Heartbeat())
        log.info("study '%s' on %s: space %s, target %s, device %s", plan.name, db.redact(url),
                 space.name, plan.profile.name, plan.device.describe())
        _run_and_report(cs, trials, timeout, obj["progress"])


@cli.command()
@click.option("--space", "space_path", required=True, help="Search-space YAML (or a shipped name).")
@click.option("--budget-mb", type=click.FloatRange(min=0, min_open=True), required=True,
              help="Memory budget (fp32 parameter MB) the gates are trained toward.")
@click.option("--steps", type=click.IntRange(min=1), help="Gate-training steps [default: the space's].")
def slim(space_path: str, budget_mb: float, steps: int | None) -> None:
    """Train slimming gates on the space's base once and store their importance scores."""
    import dataclasses

    from canao.compress.importance import importance_scores, unit_bytes
    from canao.models import load_or_train_base
    from canao.space import load_space, load_task

    space = load_space(space_path)
    task = load_task(space)
    base, info = load_or_train_base(space, task)
    slimming = dataclasses.replace(space.candidate.slimming, budget_mb=budget_mb,
                                   **({"steps": steps} if steps else {}))
    spec = dataclasses.replace(space.candidate, importance="gates", slimming=slimming)
    scores, record = importance_scores(base, info["key"], task.split("train"), spec)
    full = unit_bytes(base)["total"] / 1e6
    click.echo(f"base {info['key']}: {full:.4f} MB of fp32 parameters; gates trained toward "
               f"{budget_mb:g} MB: expected {record['expected_bytes_before'] / 1e6:.4f} -> "
               f"{record['expected_bytes_after'] / 1e6:.4f} MB")
    for i, (z, h, f) in enumerate(zip(scores["layers"], scores["heads"], scores["ffn"])):
        click.echo(f"layer {i}: gate {float(z):.3f}; heads {[round(float(v), 3) for v in h]}; "
                   f"FFN neurons with gate > 0.5: {int((f > 0.5).sum())}/{len(f)}")
    click.echo("stored with the base; use them with `candidate: {importance: gates, slimming: "
               f"{{budget_mb: {budget_mb:g}}}}}` in the space file")


def _continue_options(f: Any) -> Any:
    for option in reversed((
        click.option("--study", "study_name", required=True),
        click.option("--storage", help=STORAGE_HELP),
        click.option("--trials", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Trials this process runs."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Stop after S seconds."),
        click.option("--heartbeat-s", type=click.IntRange(min=1), default=30, show_default=True,
                     help="Seconds between heartbeats of the running trial."),
        click.option("--grace-s", type=click.IntRange(min=2), default=300, show_default=True,
                     help="A RUNNING trial silent this long belongs to a dead worker: it is "
                          "failed and its parameters retried once."),
    )):
        f = option(f)
    return click.pass_obj(f)


def _continue(obj: dict[str, Any], study_name: str, storage: str | None, trials: int,
              timeout: float | None, heartbeat_s: int, grace_s: int, salt: int = 0,
              take_sigint: bool = False) -> None:
    from canao import db
    from canao import study as st
    from canao.compile import resolve_device

    if grace_s <= heartbeat_s:
        raise CanaoError(f"--grace-s ({grace_s}) must be longer than --heartbeat-s ({heartbeat_s})")
    url = _storage(storage)
    with db.sole_sqlite_worker(url) as sole:
        cs = st.load(study_name, url, heartbeat=db.Heartbeat(heartbeat_s, grace_s))
        # A worker on another device would mix its latencies into the front: refused before
        # it touches a trial.
        st.check_device(cs, resolve_device(cs.profile))
        if sole:  # the file's lock proves no other process runs this study's trials
            recovered = st.recover_orphans(cs)
            if recovered:
                log.info("failed %d trial(s) left RUNNING by a process that died (%s); their "
                         "parameters run again first", len(recovered),
                         ", ".join(map(str, recovered)))
        _run_and_report(cs, trials, timeout, obj["progress"], salt, take_sigint)


@cli.command()
@_continue_options
def resume(obj: dict[str, Any], **kwargs: Any) -> None:
    """Run more trials of an existing study (its space and target are stored with it)."""
    _continue(obj, **kwargs)


@cli.command()
@_continue_options
def worker(obj: dict[str, Any], **kwargs: Any) -> None:
    """Run trials of an existing study, alongside any number of other workers.

    Workers on any machines share one study through its database (PostgreSQL; a SQLite
    file takes one worker). A worker that dies leaves a trial that any worker, on
    starting its next trial, fails and re-runs once with the same parameters (see --grace-s).
    SIGINT stops a worker after failing its running trial, even when it was started with
    SIGINT ignored (a background job of a script): that is how a service stops its workers.
    """
    _continue(obj, **kwargs, salt=os.getpid(), take_sigint=True)
