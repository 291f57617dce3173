"""The command group, its shared options and the printing of fronts and reports."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

log = logging.getLogger("canao")

STORAGE_HELP = "SQLAlchemy URL of the study database [default: $CANAO_STORAGE or sqlite:///canao.db]"


def _storage(url: str | None) -> str:
    from canao.db import storage_url

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
    if "canao.study" in sys.modules:  # imported already (the CLI called in-process): set again
        from canao.study import quiet_optuna

        quiet_optuna()
    ctx.obj = {"progress": not quiet}
    from canao import _progress

    _progress.set_enabled(not quiet)


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
    # The accuracy's fidelity: inherited from the supernet, or after N recovery steps.
    click.echo(f"{'trial':>5}  {'accuracy':>8}  {'accuracy_at':<13}  {'latency_ms':>10}  "
               f"{'memory_mb':>9}  architecture")
    from canao.space import ArchConfig

    for r in rows:
        arch = ArchConfig.from_dict(r["arch"]).describe() if r["arch"] else "?"
        if r.get("reference"):
            arch += f"  (hand-designed: {r['reference']})"
        if "int8-dynamic" in arch:  # whether its matmuls ran on a dot-product instruction
            arch += "  [int8 tensorised]" if r.get("int8_tensorised") else "  [int8 in int32]"
        at = r.get("accuracy_fidelity") or "-"
        click.echo(f"{r['trial']:>5}  {r['accuracy']:>8.4f}  {at:<13}  {r['latency_ms']:>10.4f}  "
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
