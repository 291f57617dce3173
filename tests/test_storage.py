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
