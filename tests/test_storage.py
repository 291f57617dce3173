"""The same study operations on every supported database: SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from .conftest import FAST_TARGET, TINY_SPACE, run_cli


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'canao.db'}"
        return
    yield request.getfixturevalue("postgres_url")


def test_search_status_resume_on_each_database(storage: str, tmp_path: Path) -> None:
    name = f"contract-{uuid.uuid4().hex[:8]}"
    try:
        code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target",
                             str(FAST_TARGET), "--study", name, "--storage", storage,
                             "--trials", "1", "--artifacts", str(tmp_path / "a"))
        assert code == 0, text
        code, text = run_cli("-q", "resume", "--study", name, "--storage", storage, "--trials", "1")
        assert code == 0, text
        code, text = run_cli("status", "--study", name, "--storage", storage)
        assert code == 0 and f"{name}: space tiny_digits, target fast-cpu; 2 trials (complete 2)" in text
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.directions) == 3 and len(study.best_trials) >= 1
    finally:
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass


def test_the_listing_follows_every_change_it_can_show(tmp_path) -> None:
    """The study listing is cached between changes; every change it shows must invalidate it."""
    import optuna

    from canao.db import summaries

    url = f"sqlite:///{tmp_path / 'l.db'}"
    study = optuna.create_study(study_name="a", storage=url,
                                directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("canao", {"space_name": "s", "profile_name": "p"})
    assert summaries(url)[0]["trials"] == 0
    trial = study.ask()
    assert summaries(url)[0]["states"] == {"RUNNING": 1}
    study.tell(trial, [0.5, 1.0, 2.0])
    (row,) = summaries(url)
    assert row["states"] == {"COMPLETE": 1} and row["best"]["accuracy"] == 0.5
    study.set_user_attr("canao", {"space_name": "s2", "profile_name": "p"})
    assert summaries(url)[0]["space"] == "s2"
    optuna.create_study(study_name="b", storage=url)
    assert [r["study"] for r in summaries(url)] == ["a", "b"]
