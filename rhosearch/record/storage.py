"""Where a study lives and how rhosearch opens it: the study's folder, its storage (a SQLite
file `reports/<study>/study.db` by default, or any Optuna storage URL, checked before Optuna
meets it), its companion studies, and writing a trial's measurements.

    study = load_study("demo")                        # refuses a missing or damaged study
    noise = stage_study(study, Stage.NOISE)           # `demo::noise`, in the same storage

Only the search driver process writes to a storage (Ray workers report to the driver, which
tells Optuna), so SQLite never sees concurrent writers and "database is locked" cannot
happen; the busy timeout covers readers such as a report opened while a search runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import optuna

from rhosearch import values
from rhosearch.errors import RhoSearchError
from rhosearch.vocab import Stage

__all__ = [
    "COMPANION_STAGES", "default_storage_url", "load_study", "open_storage", "record_attrs",
    "stage_study", "storage_of", "study_dir", "trial_params",
]


def study_dir(study_name: str, reports_dir: Path | str = "reports") -> Path:
    """Where a study's files live: `reports/<study>/`."""
    try:
        values.study_name(study_name)  # the rule every command's --study is checked by
    except argparse.ArgumentTypeError as exc:
        raise RhoSearchError(f"study name: {exc}") from None
    return Path(reports_dir) / study_name


def default_storage_url(study_name: str, reports_dir: Path | str = "reports") -> str:
    return f"sqlite:///{(study_dir(study_name, reports_dir) / 'study.db').resolve()}"


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`; SQLite gets a busy timeout for concurrent readers.

    A SQLite file is first checked without writing to it: a damaged one, a database of someone
    else's (no Optuna tables) and an empty (0-byte) file are refused, never turned into a
    study; without `create` (commands that only read a study) a missing file is refused too,
    where Optuna would create it."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        _refuse_damaged_sqlite(path)
        _refuse_foreign_sqlite(path, url, create=create)
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return _sqlite_storage(url)
        return optuna.storages.get_storage(url)
    except (ImportError, ValueError, optuna.exceptions.OptunaError) as exc:
        raise RhoSearchError(f"cannot open storage {url!r}: {exc}") from None
    except Exception as exc:  # sqlalchemy raises its own errors for bad URLs and servers
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RhoSearchError(f"cannot open storage {url!r}: {first}") from None


def _sqlite_storage(url: str, *, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on SQLite with a busy timeout. Opening a new file writes its schema;
    two processes doing that at once (a search starting while `rhosearch report` or a test
    polls the same file) can collide, so a failed open is retried before it counts."""
    import time

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):  # the other writer
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _refuse_damaged_sqlite(path: Path) -> None:
    """Refuses a SQLite file that fails SQLite's own check (truncated, garbage written into
    it, not a database), before Optuna meets it mid-search as a `StorageInternalError`."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        # Read-write, as every opener of the file: a driver killed mid-write leaves a hot
        # journal, which SQLite rolls back on open (read-only it fails "attempt to write a
        # readonly database"). The check itself only reads.
        with sqlite3.connect(path, timeout=60) as connection:
            problems = [row[0] for row in connection.execute("PRAGMA quick_check(1)")]
        connection.close()
    except sqlite3.Error as exc:
        problems = [str(exc)]
    if problems == ["ok"]:
        return
    kept = path.parent / "trials.csv"
    raise RhoSearchError(
        f"study database {path} is damaged ({problems[0]}); it was left as it is: start "
        f"afresh with --storage sqlite:///NEW.db or another --study"
        + (f" (the trials it held when last written are in {kept})" if kept.is_file() else ""))


def _refuse_foreign_sqlite(path: Path, url: str, *, create: bool) -> None:
    import time

    kind = values.read_only_sqlite(path)
    for _ in range(4):  # a driver creating the file writes its schema within moments
        if kind != "empty" or path.stat().st_size:
            break
        time.sleep(0.5)
        kind = values.read_only_sqlite(path)
    if kind == "other":
        raise RhoSearchError(f"{path} is a SQLite database without Optuna's tables, not a "
                             "study; rhosearch leaves it as it is (give another --storage)")
    if kind == "empty":
        raise RhoSearchError(f"{path} is empty, not a study; rhosearch does not adopt it "
                             "(delete it, or give another --storage or --study)")
    if kind == "missing" and not create:
        raise RhoSearchError(f"no study database at {url}; run `rhosearch search` first or "
                             "give the --storage a search wrote")


def load_study(
    study_name: str, *, storage: str | None = None, reports_dir: Path | str = "reports"
) -> optuna.Study:
    """Loads an existing study; a missing one is an error listing what the storage holds."""
    url = storage or default_storage_url(study_name, reports_dir)
    if storage is None and not Path(url.removeprefix("sqlite:///")).is_file():
        raise RhoSearchError(
            f"no study {study_name!r} under {study_dir(study_name, reports_dir)}; "
            "run `rhosearch search --study NAME` first or pass --storage URL"
        )
    backend = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        raise RhoSearchError(
            f"storage {url} has no study {study_name!r}; it has: {', '.join(names) or 'none'}"
        ) from None


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes: the one place rhosearch reads `Study._storage`.

    Optuna (5.0) has no public accessor for it, and a study loaded by name (`load_study`, a
    companion study, a test's in-memory study) does not hand back the storage object it was
    opened with; companion studies must live in the same storage as their study."""
    return study._storage


def record_attrs(study: optuna.Study, trial: optuna.Trial | int, attrs: dict[str, Any]) -> None:
    """Writes a trial's measurements as user attrs (JSON-safe values only).

    Written through `optuna.Trial.set_user_attr`, so the live trial's own `user_attrs` see them.

    Args:
        study: the study holding the trial.
        trial: a live trial (`study.ask`), or the number of a RUNNING trial another process
            left behind, opened with Optuna's public constructor `optuna.Trial(study, id)`
            (the id from the storage's public `get_trial_id_from_study_id_trial_number`).
        attrs: what to record (numpy scalars become Python numbers).
    """
    if not isinstance(trial, optuna.Trial):
        storage = storage_of(study)
        study_id = storage.get_study_id_from_name(study.study_name)
        trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                                     trial))
    for key, value in attrs.items():
        trial.set_user_attr(key, value.item() if hasattr(value, "item") else value)


# Stages kept in their own study, out of the sampler's history (see the module docstring):
# the resolve stage's further seeds are repeated measurements of configurations the sampler has
# already seen once, so they live beside it too (the sampler sees one point per rho).
COMPANION_STAGES = (Stage.ONESHOT, Stage.HEAD, Stage.NOISE, Stage.RESOLVE)


def stage_study(study: optuna.Study, stage: str, *, create: bool = True) -> optuna.Study | None:
    """The companion study of `stage` (a `COMPANION_STAGES` member) beside `study`, in its
    storage."""
    if stage not in COMPANION_STAGES:
        raise ValueError(f"{stage!r} trials live in the main study")
    name = f"{study.study_name}::{stage}"
    if not create:
        try:
            return optuna.load_study(study_name=name, storage=storage_of(study))
        except KeyError:
            return None
    return optuna.create_study(study_name=name, storage=storage_of(study),
                               directions=study.directions, load_if_exists=True)


def trial_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A trial's parameters, also while it waits in the queue (or was killed inside Optuna's
    ask): `enqueue_trial` keeps them in the system attr `fixed_params` until the trial runs,
    and `trial.params` stays empty. The one place that reads that Optuna internal."""
    # The queued parameters first: a trial killed inside `ask` may have some of them set.
    return dict(trial.system_attrs.get("fixed_params") or trial.params or {})
