"""One driver per study: the lease refuses a second driver while the first lives, and is taken
over from a dead one (at once on this host, after expiry from another); two real drivers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest

from rhosearch.errors import RhoSearchError
from rhosearch.record.lease import DriverLease, lease_name
from rhosearch.record.study import open_storage


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_a_second_driver_is_refused_naming_the_holder(url):
    with DriverLease.acquire(url, "s", command="search"):
        with pytest.raises(RhoSearchError) as refused:
            DriverLease.acquire(url, "s", command="search")
    message = str(refused.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in message
    assert "\n" not in message and "--resume" in message
    DriverLease.acquire(url, "s", command="search").release()  # released: free again


def test_a_holder_in_the_middle_of_a_write_is_named_at_once(url, tmp_path):
    """The refusal only reads: it does not wait for the holder's write lock (a driver stopped
    mid-transaction holds it for as long as it is stopped)."""
    import sqlite3

    with DriverLease.acquire(url, "s", command="search"):
        writer = sqlite3.connect(tmp_path / "study.db", timeout=0)
        writer.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held: readers still read
        try:
            started = time.perf_counter()
            with pytest.raises(RhoSearchError, match=f"pid {os.getpid()}"):
                DriverLease.acquire(url, "s", command="search")
            assert time.perf_counter() - started < 30  # not the storage's 60 s busy wait
        finally:
            writer.rollback()
            writer.close()


def test_other_studies_in_the_same_storage_are_not_held(url):
    with DriverLease.acquire(url, "a", command="search"):
        DriverLease.acquire(url, "b", command="train-best").release()


def _plant(url, study, **holder):
    """A lease as another driver would have left it."""
    storage = open_storage(url)
    lease_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                        study_name=lease_name(study))
    for key, value in holder.items():
        storage.set_study_user_attr(lease_id, key, value)


def test_a_dead_local_holder_is_taken_over_at_once(url):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant(url, "s", host=socket.gethostname(), pid=dead.pid, command="search",
           expires=time.time() + 3600)
    DriverLease.acquire(url, "s", command="search").release()


def test_a_remote_holder_is_refused_until_its_lease_expires(url):
    _plant(url, "s", host="elsewhere", pid=1, command="search", expires=time.time() + 3600)
    with pytest.raises(RhoSearchError, match="host elsewhere, pid 1"):
        DriverLease.acquire(url, "s", command="search")
    storage = open_storage(url)
    storage.set_study_user_attr(storage.get_study_id_from_name(lease_name("s")), "expires",
                                time.time() - 1)
    DriverLease.acquire(url, "s", command="search").release()


def test_the_heartbeat_renews_the_lease(url):
    lease = DriverLease.acquire(url, "s", command="search", ttl_s=2, heartbeat_s=0.2)
    try:
        storage = open_storage(url)
        first = storage.get_study_user_attrs(lease.lease_id)["expires"]
        time.sleep(0.8)
        assert storage.get_study_user_attrs(lease.lease_id)["expires"] > first
    finally:
        lease.release()


# --- two real drivers on one SQLite study -----------------------------------------------------

# Proxy stage only, 64 + 64 images at 32 px: the lease, not the training, is under test.
SMALL = ("--stage", "proxy", "--noise-seeds", "0", "--set", "subset=64", "--set",
         "val_subset=64", "--set", "resolution=32")


def _trials(tmp_path):
    if not (tmp_path / "k" / "study.db").exists():
        return []
    # Opened as rhosearch opens it: the driver may be writing the new file's schema right now.
    storage = open_storage(f"sqlite:///{tmp_path / 'k' / 'study.db'}")
    try:
        return optuna.load_study(study_name="k", storage=storage).get_trials()
    except KeyError:  # the file exists a moment before the study's row does
        return []


def test_two_drivers_one_study_second_refused_then_takes_over_after_kill_9(tmp_path,
                                                                           search_command):
    log = (tmp_path / "first.log").open("w")  # what it said, should it end early
    first = subprocess.Popen(search_command(*SMALL, trials=3), cwd=tmp_path,
                             start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None and not any(
                t.state.name == "RUNNING" and "rho" in t.user_attrs for t in _trials(tmp_path)):
            time.sleep(0.5)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        # Frozen, it stays alive with its trials RUNNING for as long as the check takes.
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run(search_command(*SMALL, "--resume", trials=3), cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        # The refused driver left the first one's running trials alone.
        assert not [t for t in _trials(tmp_path) if t.user_attrs.get("status") == "interrupted"]
        frozen = [t for t in _trials(tmp_path) if t.state.name == "RUNNING"]
        running = {_params(t) for t in frozen}
        # The trials frozen with their rho recorded (the wait above saw one): these must run
        # again as themselves; one frozen inside Optuna's ask may have no rho yet.
        left = {t.number: t.user_attrs["rho"] for t in frozen if "rho" in t.user_attrs}
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            os.killpg(first.pid, signal.SIGKILL)  # the driver, its Ray and its workers
        first.wait()
    assert running
    before = {t.number: (t.user_attrs["rho"], t.values) for t in _trials(tmp_path)
              if t.state.name == "COMPLETE"}
    resumed = subprocess.run(search_command(*SMALL, "--resume", trials=3), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(tmp_path)
    trained = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("trained")]
    assert all(number in {t.number for t in trained} for number in before)
    assert len(trained) == 3  # the target: none lost, none trained twice
    assert len({t.user_attrs["rho"] for t in trained}) == 3
    # Each trial the kill interrupted ran again as itself (same rho), not as another proposal
    # (one killed between Optuna's ask and its first record has its params only).
    interrupted = [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert {t.number for t in interrupted} == {t.number for t in frozen}
    assert {_params(t) for t in interrupted} == running
    # Each one frozen with its rho: trained again exactly once, as a rerun of its own number
    # with its own rho (`rerun_of`); (): one frozen inside Optuna's ask, nothing to re-run.
    assert left
    reruns = sorted((t.user_attrs["rerun_of"], t.user_attrs["rho"]) for t in trained
                    if t.user_attrs.get("rerun_of") in left)
    assert reruns == sorted(left.items())
    assert {_params(t) for t in interrupted} - {()} <= {_params(t) for t in trained}
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]


def _params(trial):
    return tuple(sorted(trial.params.items()))


def test_a_driver_whose_lease_was_taken_over_stops_and_says_so(url):
    """Silent past the TTL (stopped, cut off), then taken over: the heartbeat stops the main
    thread, and leaving the lease is a one-line error, not a driver writing on."""
    storage = open_storage(url)
    with pytest.raises(RhoSearchError, match="took this driver's lease over") as stopped:
        with DriverLease.acquire(url, "s", command="search", ttl_s=60, heartbeat_s=0.2) as lease:
            # What `_remove_if_stale` does to a lease it judges stale: deletes it by its id.
            storage.delete_study(storage.get_study_id_from_name(lease_name("s")))
            deadline = time.time() + 30
            with contextlib.suppress(KeyboardInterrupt):  # the heartbeat's interrupt
                while time.time() < deadline:
                    time.sleep(0.05)
            assert lease.lost and not lease.writes_allowed
            assert time.time() < deadline  # interrupted, not waited out
    assert "\n" not in str(stopped.value)
