"""The checkers of values.py, one kind of value each: what passes, what is refused, and that a
refusal reads nothing it should not (a FIFO is never opened, a SQLite file never written)."""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import threading

import pytest

from rhosearch import values
from rhosearch.errors import RhoSearchError
from rhosearch.values import Budget, parse_budget


@pytest.mark.parametrize("text, budget", [
    ("2cpus", Budget(cpus=2)), ("0.5gpus", Budget(gpus=0.5)),
    ("2cpus,30m", Budget(cpus=2, wall_s=1800)), ("8cpus, 1gpu, 1h", Budget(8, 1, 3600)),
])
def test_a_budget_parses(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text, why", [
    ("1.5cpus", "whole number of CPUs"), ("2cpus,0h", "leaves no time"),
    ("2cpus,0s", "leaves no time"), ("10000000cpus", "more than"), ("2cpus,2cpus", "twice"),
    ("12h", "names no CPUs"), ("nancpus", "cannot read"), ("", "cannot read"),
])
def test_a_budget_that_cannot_run_is_refused(text, why):
    with pytest.raises(RhoSearchError, match=why):
        parse_budget(text)
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        values.budget(text)


def test_numbers_are_bounded_and_finite():
    epochs = values.whole(1, 10)
    assert epochs("3") == 3
    for text in ("0", "11", "2.5", "nan", "1e9"):
        with pytest.raises(argparse.ArgumentTypeError):
            epochs(text)
    share = values.finite(0, 8, above_low=True)
    assert share("0.5") == 0.5
    for text in ("nan", "inf", "-inf", "0", "9", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            share(text)


@pytest.mark.parametrize("name", ["default", "s", "run-2.b_c", "x" * 100])
def test_a_study_name_passes(name):
    assert values.study_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "../x", "a/b", "a:b", "a::lease", "x" * 101,
                                  "-flag", "a b"])
def test_a_study_name_that_is_no_folder_name_is_refused(name):
    with pytest.raises(argparse.ArgumentTypeError, match="is not a study name"):
        values.study_name(name)


def test_a_yaml_alias_bomb_is_refused_without_being_expanded(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "bomb.yaml").stat().st_size < 1000
    with pytest.raises(RhoSearchError, match="aliases expand"):
        values.load_yaml(tmp_path / "bomb.yaml", what="space")


def test_yaml_with_a_few_aliases_loads(tmp_path):
    (tmp_path / "ok.yaml").write_text("a: &x [1, 2]\nb: *x\n")
    assert values.load_yaml(tmp_path / "ok.yaml", what="space") == {"a": [1, 2], "b": [1, 2]}


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "waiting.yaml"
    os.mkfifo(fifo)
    done = threading.Event()

    def refuse() -> None:
        with pytest.raises(RhoSearchError, match="is a FIFO"):
            values.load_yaml(fifo, what="space")
        done.set()

    worker = threading.Thread(target=refuse, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert done.is_set(), "opened the FIFO (blocked waiting for a writer)"


def test_an_image_tree_with_a_symlink_loop_or_a_fifo_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.png").write_bytes(b"png")
    assert values.check_file_tree(tmp_path, suffixes=(".png",), what="image") == 1
    (tmp_path / "a" / "up").symlink_to(tmp_path)
    with pytest.raises(RhoSearchError, match="symlink loop"):
        values.check_file_tree(tmp_path, suffixes=(".png",), what="image")
    (tmp_path / "a" / "up").unlink()
    (tmp_path / "a" / "self.png").symlink_to(tmp_path / "a" / "self.png")
    with pytest.raises(RhoSearchError, match="self.png"):
        values.check_file_tree(tmp_path, suffixes=(".png",), what="image")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_sqlite_file_is_told_apart_without_being_written(tmp_path):
    import optuna

    own = tmp_path / "own.db"
    with sqlite3.connect(own) as db:
        db.execute("CREATE TABLE customers (name TEXT)")
    db.close()
    before = _sha(own)
    assert values.read_only_sqlite(own) == "other"
    assert _sha(own) == before
    (tmp_path / "empty.db").write_bytes(b"")
    assert values.read_only_sqlite(tmp_path / "empty.db") == "empty"
    assert values.read_only_sqlite(tmp_path / "none.db") == "missing"
    assert not (tmp_path / "none.db").exists()
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert values.read_only_sqlite(tmp_path / "study.db") == "optuna"


def test_a_write_through_a_symlink_or_over_a_foreign_file_is_refused(tmp_path):
    (tmp_path / "mine.html").write_text("a user's page")
    (tmp_path / "index.html").symlink_to(tmp_path / "mine.html")
    with pytest.raises(RhoSearchError, match="is a symlink"):
        values.check_new_file(tmp_path / "index.html", flag="report")
    with pytest.raises(RhoSearchError, match="not written by rhosearch"):
        values.check_new_file(tmp_path / "mine.html", flag="report", ours=lambda p: False)
    values.check_new_file(tmp_path / "new.html", flag="report", ours=lambda p: False)
