"""The per-device tuning databases: tuning list, export, import."""

from __future__ import annotations

import json
from pathlib import Path

import click

from canao.cli._base import (
    cli,
)
from canao.errors import CanaoError


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


@tuning.command("space")
@click.option("--space", "space_path", required=True, help="Search-space YAML (or a shipped name).")
@click.option("--target", "target_path", required=True, help="Target profile JSON (or a shipped name).")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
              default=Path("canao_artifacts"), show_default=True,
              help="Where the workload models are built.")
def tuning_space(space_path: str, target_path: str, artifacts: Path) -> None:
    """Tune every workload a space's candidates can have, once, into the device's database."""
    from canao.compile import device_tuning_dir, resolve_device
    from canao.space import load_space
    from canao.study._workloads import tune_space
    from canao.targets import load_profile

    space, profile = load_space(space_path), load_profile(target_path)
    if profile.tuning.rung != "tuned":
        raise CanaoError(f"target profile '{profile.name}' does not tune (rung "
                         f"'{profile.tuning.rung}'): there is nothing to tune up front")
    device = resolve_device(profile)
    r = tune_space(space, profile, device, device_tuning_dir(device), artifacts / "workloads")
    if r["cached"]:
        click.echo(f"space '{space.name}' was tuned on this device already: {r['models']} workload "
                   f"model(s), {r['tuned_tasks']} workloads tuned in {r['wall_s']:.0f} s")
        return
    click.echo(f"tuned space '{space.name}' on {device.describe()}: {r['models']} workload model(s), "
               f"{r['tasks']} workloads met, {r['tuned_tasks']} tuned, {r['tuning_s']:.0f} s "
               f"tuning, {r['wall_s']:.0f} s in all")
