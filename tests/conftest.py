"""Shared fixtures: an isolated cache, tiny spaces, and a finished study to read from."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
TINY_SPACE = DATA / "tiny_digits.yaml"
FAST_TARGET = DATA / "fast-cpu.json"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Bases trained by tests go to a per-session cache (child processes inherit it).
    os.environ["CANAO_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("CANAO_STORAGE", None)
    os.environ.pop("CANAO_ARTIFACTS", None)


def run_cli(*args: str) -> tuple[int, str]:
    """Run the CLI in-process; returns (exit code, stderr+stdout text)."""
    import contextlib
    import io

    from canao.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue() + out.getvalue()


def db_fingerprint(path: Path) -> str:
    """A digest of every row of every table: equal before and after means nothing changed."""
    if not path.exists():
        return "absent"
    h = hashlib.sha256()
    con = sqlite3.connect(path)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for t in tables:
            h.update(t.encode())
            for row in con.execute(f'SELECT * FROM "{t}" ORDER BY 1'):
                h.update(repr(row).encode())
    finally:
        con.close()
    return h.hexdigest()


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny study with 3 finished trials, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("study")
    url = f"sqlite:///{root / 'canao.db'}"
    code, text = run_cli("-q", "search", "--space", str(TINY_SPACE), "--target", str(FAST_TARGET),
                         "--study", "tiny", "--storage", url, "--trials", "3",
                         "--artifacts", str(root / "artifacts"))
    assert code == 0, text
    return {"url": url, "db": root / "canao.db", "study": "tiny", "root": root}


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


@pytest.fixture
def postgres_url() -> str:
    """``CANAO_TEST_DATABASE_URL``; skipped with the reason when unreachable, unless CI=true."""
    reason = _postgres_reachable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI requires PostgreSQL: {reason}")
        pytest.skip(reason=f"PostgreSQL CANAO_TEST_DATABASE_URL unreachable: {reason}")
    return PG_URL
