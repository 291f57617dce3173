"""The same study operations on every supported database: SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from .conftest import FAST_TARGET, TINY_SPACE, run_cli

PG_URL = os.environ.get("CANAO_TEST_DATABASE_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as con:
            con.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        return None
    except Exception as e:  # any failure to connect means: not here
        return str(e).splitlines()[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'canao.db'}"
        return
    reason = _postgres_reachable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason=f"PostgreSQL CANAO_TEST_DATABASE_URL unreachable: {reason}")
    yield PG_URL


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
