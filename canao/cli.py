"""The ``canao`` command line. Thin: parse, call the library, map CanaoError to exit code 2."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from canao.errors import CanaoError

log = logging.getLogger("canao")

STORAGE_HELP = "SQLAlchemy URL of the study database [default: $CANAO_STORAGE or sqlite:///canao.db]"


def _storage(url: str | None) -> str:
    from canao.study import storage_url

    return storage_url(url)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Warnings and errors only, no progress bars.")
@click.version_option(package_name="canao")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Compiler-aware architecture search: compressed transformers, compiled and measured with TVM."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="canao: %(message)s", stream=sys.stderr, force=True)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.WARNING)
    ctx.obj = {"progress": not quiet}


def _budget_options(what: str) -> Any:
    """``--max-latency-ms``, ``--max-memory-mb`` and ``--max-accuracy-drop``."""
    def wrap(f: Any) -> Any:
        for name, unit in (("max-accuracy-drop", "accuracy units below the base, 0.01 = 1 point"),
                           ("max-memory-mb", "MB"), ("max-latency-ms", "ms")):
            f = click.option(f"--{name}", type=click.FloatRange(min=0),
                             help=f"{what} ({unit}).")(f)
        return f
    return wrap


def _print_front(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("(no finished trials)")
        return
    click.echo(f"{'trial':>5}  {'accuracy':>8}  {'latency_ms':>10}  {'memory_mb':>9}  architecture")
    from canao.space import ArchConfig

    for r in rows:
        arch = ArchConfig.from_dict(r["arch"]).describe() if r["arch"] else "?"
        if r.get("reference"):
            arch += f"  (hand-designed: {r['reference']})"
        click.echo(f"{r['trial']:>5}  {r['accuracy']:>8.4f}  {r['latency_ms']:>10.4f}  "
                   f"{r['memory_mb']:>9.4f}  {arch}")


def _run_and_report(cs: Any, trials: int | None, timeout: float | None, progress: bool,
                    salt: int = 0, take_sigint: bool = False) -> None:
    from canao.study import front, run

    done = run(cs, n_trials=trials, timeout=timeout, progress=progress, salt=salt,
               take_sigint=take_sigint)
    total = len(cs.study.trials)
    from canao.compile import fidelity

    click.echo(f"study '{cs.name}': {done} trial(s) finished in this run, {total} stored; "
               f"latencies measured on {cs.profile.name} builds at rung "
               f"'{fidelity(cs.profile)[0]}'")
    click.echo("Pareto front (accuracy on validation, median latency, parameters + workspace):")
    _print_report(front(cs))


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
    with st.sole_sqlite_worker(url):
        cs = plan.create(url, artifacts=folder, seed=seed, heartbeat=st.Heartbeat())
        log.info("study '%s' on %s: space %s, target %s, device %s", plan.name, st.redact(url),
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
    from canao.space import load_space
    from canao.tasks import load_task

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
    from canao import study as st
    from canao.compile import resolve_device

    if grace_s <= heartbeat_s:
        raise CanaoError(f"--grace-s ({grace_s}) must be longer than --heartbeat-s ({heartbeat_s})")
    url = _storage(storage)
    with st.sole_sqlite_worker(url) as sole:
        cs = st.load(study_name, url, heartbeat=st.Heartbeat(heartbeat_s, grace_s))
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


@cli.command()
@click.option("--study", "study_name")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True)
def status(study_name: str | None, storage: str | None, as_json: bool) -> None:
    """Studies, their trial counts by state, and best values."""
    from canao.study import summaries

    rows = summaries(_storage(storage), study_name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no studies")
    for r in rows:
        states = ", ".join(f"{k.lower()} {v}" for k, v in r["states"].items()) or "no trials"
        b = r["best"]
        best = ("" if b["accuracy"] is None else
                f"; best accuracy {b['accuracy']:.4f}, latency {b['latency_ms']:.4f} ms, "
                f"memory {b['memory_mb']:.4f} MB")
        click.echo(f"{r['study']}: space {r['space']}, target {r['target']}; {r['trials']} "
                   f"trials ({states}){best}")
        click.echo(f"  device: {r['device'] or 'not resolved yet (made before device identities)'}")
        d = r["drift"]
        if d:
            click.echo(f"  drift: {d['readings']} sentinel timing(s), latest {d['latest_ratio']:.3f}x "
                       f"the first, largest deviation {100 * d['max_deviation']:.1f}%; "
                       f"{r['drift_flagged']} trial(s) flagged")


@cli.command()
@click.option("--study", "study_name", required=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--json", "as_json", is_flag=True)
@_budget_options("Read the front under this budget instead of the study's.")
def pareto(study_name: str, storage: str | None, as_json: bool, **budgets: float | None) -> None:
    """The feasible Pareto front of accuracy, latency and memory."""
    from canao import study as st

    cs = st.load(study_name, _storage(storage))
    report = st.front(cs, st.with_overrides(cs.budgets, **budgets))
    if as_json:
        click.echo(json.dumps(report["front"], indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    """A front from :func:`canao.study.front`, with its budgets and what broke them."""
    limits = {k: v for k, v in report["budgets"].items() if v is not None}
    if limits:
        click.echo("budgets: " + ", ".join(f"{k} {v:g}" for k, v in limits.items())
                   + f"; {report['infeasible']} of {report['finished']} finished trial(s) "
                   "break one")
    if report["finished"] and not report["front"]:
        click.echo("no finished trial meets the budgets; the nearest ones:")
        _print_front(report["nearest"])
        return
    _print_front(report["front"])


@cli.command()
@click.option("--study", "study_name", required=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--trial", type=int, help="Export this trial.")
@click.option("--max-latency-ms", type=float, help="Most accurate Pareto trial within this latency.")
@click.option("--max-memory-mb", type=float, help="... and within this memory.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle folder to write.")
@click.option("--cpu", help="Build for this named CPU (an LLVM name: x86-64-v3 runs on any AVX2 "
                            "machine) instead of the study's device; timed on this machine.")
def export(study_name: str, storage: str | None, trial: int | None,
           max_latency_ms: float | None, max_memory_mb: float | None, out: Path,
           cpu: str | None) -> None:
    """Write the compiled bundle of a trial, chosen by number or by budgets."""
    from canao import study as st
    from canao.compile import resolve_device
    from canao.export import export_bundle, select_trial
    from canao.measure import cpu_flags

    if (trial is None) == (max_latency_ms is None and max_memory_mb is None):
        raise CanaoError("give either --trial N or a budget (--max-latency-ms and/or "
                         "--max-memory-mb)")
    cs = st.load(study_name, _storage(storage))
    chosen = select_trial(cs, trial=trial, max_latency_ms=max_latency_ms,
                          max_memory_mb=max_memory_mb)
    # The final build is timed here: without --cpu this machine must be the study's device.
    device = resolve_device(cs.profile, mcpu=cpu)
    if cpu is None:
        st.check_device(cs, device)
    else:
        flags = cpu_flags()
        missing = device.missing_on(flags) if flags is not None and cs.profile.rpc is None else []
        if missing:
            raise CanaoError(f"--cpu {cpu}: this machine lacks {', '.join(missing)}, so a build "
                             "for that CPU cannot be timed here")
    m = export_bundle(cs, chosen, out, device)
    click.echo(f"exported trial {m['trial']} to {out}: test accuracy {m['test_accuracy']:.4f} "
               f"(through the compiled module), {m['latency_ms']:.4f} ms ({m['fidelity']}), "
               f"{m['memory_mb']:.4f} MB; built for {device.describe()}")


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "input_path", type=click.Path(dir_okay=False, path_type=Path),
              help=".npy array of inputs; without it the bundle's task split is evaluated.")
@click.option("--text", "texts", multiple=True,
              help="Classify this text (text models; repeatable).")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "validation", "test"]))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Save logits as .npy.")
def predict(bundle: Path, input_path: Path | None, texts: tuple[str, ...], split: str,
            out: Path | None) -> None:
    """Run an exported bundle with the TVM runtime alone (no torch)."""
    import numpy as np

    from canao.runtime import TOKENIZER_FILE, load_bundle

    model, metrics = load_bundle(bundle)
    tokenizer = None
    if (bundle / TOKENIZER_FILE).is_file():
        from canao.tasks import tokenizer_from_json

        tokenizer = tokenizer_from_json((bundle / TOKENIZER_FILE).read_text())
    if texts:
        if tokenizer is None:
            raise CanaoError(f"{bundle}: not a text model (no {TOKENIZER_FILE}); use --input")
        from canao.tasks import encode

        logits = model.predict(encode(tokenizer, texts, metrics["max_len"]))
        for text, k in zip(texts, logits.argmax(axis=1)):
            click.echo(f"{metrics['labels'][int(k)]}\t{text}")
    elif input_path is not None:
        try:
            x = np.load(input_path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CanaoError(f"{input_path}: not a readable .npy array: {e}") from e
        if tuple(x.shape[1:]) != model.input_shape[1:]:
            raise CanaoError(f"{input_path}: samples of shape {tuple(x.shape[1:])}, the model "
                             f"takes {tuple(model.input_shape[1:])}")
        logits = model.predict(x)
        click.echo(" ".join(str(int(v)) for v in logits.argmax(axis=1)))
    else:
        from canao.tasks import TableSpec, TextTask, accuracy, get_task, text_data

        if tokenizer is not None:
            data = text_data(metrics["task"], TableSpec(**metrics.get("data") or {}))
            part = TextTask(data, tokenizer, metrics["max_len"]).split(split)
        else:
            part = get_task(metrics["task"]).split(split)
        logits = model.predict(part.x)
        click.echo(f"{metrics['task']} {split}: accuracy {accuracy(logits, part.y):.4f} on "
                   f"{len(part)} samples")
    if out is not None:
        np.save(out, logits)


def _list_shipped(folder: str, suffix: str) -> None:
    from canao.space import shipped_dir

    for p in sorted(shipped_dir(folder).glob(f"*{suffix}")):
        click.echo(str(p))


@cli.command()
def spaces() -> None:
    """List the shipped search spaces."""
    _list_shipped("search_spaces", ".yaml")


@cli.command()
def targets() -> None:
    """List the shipped target profiles."""
    _list_shipped("tvm_targets", ".json")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token-file.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the bearer token every request but /api/health must carry.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("canao_service"), show_default=True,
              help="The service's folder: artifacts, exports and worker logs.")
@click.option("--heartbeat-s", type=click.IntRange(min=1), default=30, show_default=True,
              help="--heartbeat-s of the workers the service starts.")
@click.option("--grace-s", type=click.IntRange(min=2), default=300, show_default=True,
              help="--grace-s of the workers the service starts.")
def serve(host: str, port: int, storage: str | None, token_file: Path | None, data_dir: Path,
          heartbeat_s: int, grace_s: int) -> None:
    """Serve the HTTP API and the Pareto page over the study database."""
    from canao import service
    from canao.study import open_storage

    token = service.read_token(token_file) if token_file else None
    service.check_bind(host, token)
    if grace_s <= heartbeat_s:
        raise CanaoError(f"--grace-s ({grace_s}) must be longer than --heartbeat-s ({heartbeat_s})")
    url = _storage(storage)
    open_storage(url, must_exist=False)  # an unreachable database fails here, not per request
    data_dir.mkdir(parents=True, exist_ok=True)
    service.serve(service.ServiceConfig(storage=url, data_dir=data_dir.resolve(), host=host,
                                        port=port, token=token, heartbeat_s=heartbeat_s,
                                        grace_s=grace_s))


@cli.command()
@click.option("--study", "study_name", required=True)
@click.option("--storage", help=STORAGE_HELP)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="FILE.png or FILE.html.")
def plot(study_name: str, storage: str | None, out: Path) -> None:
    """Write the study's trials and Pareto front (accuracy, latency, memory) as PNG or HTML."""
    from canao import study as st
    from canao.service import write_plot

    n = write_plot(st.load(study_name, _storage(storage)), out)
    click.echo(f"wrote {out}: {n} finished trial(s)")


@cli.group()
def tuning() -> None:
    """The per-device tuning databases (shared by every study on a device)."""


@tuning.command("list")
@click.option("--json", "as_json", is_flag=True)
def tuning_list(as_json: bool) -> None:
    """Every device database here: device, workloads, records, size."""
    from canao.compile import list_databases, tuning_root

    rows = list_databases(tuning_root())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no device databases in {tuning_root()}")
    for r in rows:
        click.echo(f"{r['key']}: {r['workloads']} workloads, {r['records']} records, "
                   f"{r['stalled']} stalled, {r['bytes'] / 1e6:.2f} MB; {r['device']}")


def _database_of(device_key: str | None, target_path: str | None) -> Path:
    from canao.compile import resolve_device, tuning_root
    from canao.targets import load_profile

    if (device_key is None) == (target_path is None):
        raise CanaoError("give either --device KEY (see `canao tuning list`) or --target PROFILE")
    key = device_key or resolve_device(load_profile(str(target_path))).key
    folder = tuning_root() / key
    if not folder.is_dir():
        raise CanaoError(f"no tuning database for device {key} in {tuning_root()}")
    return folder


@tuning.command("export")
@click.option("--device", "device_key", help="The device's key.")
@click.option("--target", "target_path", help="... or the profile whose device (from here) to export.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Archive to write (.tar.gz).")
def tuning_export(device_key: str | None, target_path: str | None, out: Path) -> None:
    """Write a device's tuning database as an archive for another machine of that device."""
    from canao.compile import export_database

    r = export_database(_database_of(device_key, target_path), out)
    click.echo(f"wrote {out}: {r['workloads']} workloads, {r['records']} records of device "
               f"{r['key']} ({r['device']})")


@tuning.command("import")
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
def tuning_import(archive: Path) -> None:
    """Merge an exported tuning database into this machine's database of its device."""
    from canao.compile import import_database, tuning_root

    r = import_database(archive, tuning_root())
    click.echo(f"merged {archive} into {r['path']}: {r['added_workloads']} new workloads, "
               f"{r['added_records']} new records; now {r['workloads']} workloads, "
               f"{r['records']} records ({r['device']})")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for any user error)."""
    try:
        cli.main(args=argv, prog_name="canao", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        # click turns a KeyboardInterrupt into Abort; SIGTERM's is told apart by its type.
        from canao.study import Terminated

        if isinstance(e, Terminated) or isinstance(e.__cause__, Terminated):
            click.echo("canao: terminated (SIGTERM); the running trial was failed", err=True)
            return 143
        click.echo("canao: interrupted", err=True)
        return 130
    except CanaoError as e:
        click.echo(f"canao: error: {e}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
