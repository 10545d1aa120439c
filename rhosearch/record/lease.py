"""One driver per study: a lease in the study's own storage, renewed by a heartbeat.

    with DriverLease.acquire(url, "demo", command="search"):
        ...  # only this process tells the study anything

Two drivers on one study would each mark the other's running trials as interrupted and run
them again. So `search` and `train-best` first take the study's lease: a companion study
`<study>::lease` in the same storage, whose user attrs name the holder (host, pid, the pid's
start time, the command) and when the lease expires. Creating a study is atomic in every
Optuna storage (a second `create_new_study` with the same name raises `DuplicatedStudyError`),
so two drivers cannot both take it. A thread renews the expiry every `HEARTBEAT_S`.

A lease whose holder is gone is taken over: at once when the holder ran on this host and its
pid no longer runs (or is another process now), else once it has expired (`TTL_S` after its
last renewal, as the holder's clock wrote it). A stale lease is deleted by its id, so of two
drivers taking over the same stale lease one deletes it and the other finds a fresh one.
A driver whose lease was taken over (it was silent past the TTL: stopped, or cut off from the
storage) must not write on: its heartbeat interrupts the main thread, the driver stops as after
Ctrl-C but leaves the study alone (`writes_allowed` is False), and leaving the lease raises
`RhoSearchError` saying why.
`report` and `load_study` never touch the lease: reading a running search stays allowed.
"""

from __future__ import annotations

import _thread
import os
import socket
import threading
import time
from typing import Any

import optuna

from rhosearch.errors import RhoSearchError
from rhosearch.record.study import open_storage

__all__ = ["DriverLease", "HEARTBEAT_S", "TTL_S", "lease_name"]

TTL_S = 60.0  # a lease not renewed for this long is free
HEARTBEAT_S = 10.0  # how often the holder renews it
# A lease study without a holder yet is one being taken right now; this long, it is stale.
_UNNAMED_GRACE_S = 5.0


def lease_name(study_name: str) -> str:
    return f"{study_name}::lease"


def _process_start(pid: int) -> str | None:
    """The pid's start time in clock ticks since boot (Linux), or None where unknown: tells a
    live driver from another process that got its pid after it died."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_runs(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        pass
    return start is None or _process_start(pid) in (None, start)


class DriverLease:
    """The lease of one study, held by this process until `release`."""

    def __init__(self, storage: optuna.storages.BaseStorage, url: str, study_name: str,
                 lease_id: int, holder: dict[str, Any], *, ttl_s: float,
                 heartbeat_s: float) -> None:
        self.url = url
        self.study_name = study_name
        self.lease_id = lease_id
        self.holder = holder
        self.ttl_s = ttl_s
        self.lost = False  # set when another driver took the lease over (we were silent)
        self._storage = storage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,),
                                        name=f"lease:{study_name}", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, url: str, study_name: str, *, command: str, ttl_s: float = TTL_S,
                heartbeat_s: float = HEARTBEAT_S) -> DriverLease:
        """Takes the study's lease, or raises `RhoSearchError` naming the live holder.

        Args:
            url: the study's storage URL.
            study_name: the study to drive.
            command: what holds it ("search", "train-best"), for the refusal message.
            ttl_s: how long the lease lives without a renewal.
            heartbeat_s: how often this process renews it.
        """
        storage = open_storage(url)
        holder = {"host": socket.gethostname(), "pid": os.getpid(),
                  "pid_start": _process_start(os.getpid()), "command": command}
        name = lease_name(study_name)
        try:
            for _ in range(5):  # each pass either takes the lease or removes one stale lease
                # Read before writing: a live holder is refused without a write, which works
                # even while it holds SQLite's write lock (stopped, or busy, mid-transaction).
                _remove_if_stale(storage, name, study_name)
                try:
                    lease_id = storage.create_new_study(
                        [optuna.study.StudyDirection.MINIMIZE], study_name=name)
                except optuna.exceptions.DuplicatedStudyError:
                    continue  # taken meanwhile: the next pass reads who holds it
                now = time.time()
                for key, value in {**holder, "since": now, "expires": now + ttl_s}.items():
                    storage.set_study_user_attr(lease_id, key, value)
                return cls(storage, url, study_name, lease_id, holder, ttl_s=ttl_s,
                           heartbeat_s=heartbeat_s)
        except optuna.exceptions.StorageInternalError as exc:  # e.g. SQLite's "locked"
            cause = str(exc.__cause__ or exc).strip().splitlines()[0]
            raise RhoSearchError(
                f"study {study_name!r}: cannot take its driver lease in {url} ({cause}); "
                "another process holds the database (a stopped or hung driver?): let it "
                "finish or stop it, then run again with --resume (nothing was changed)"
            ) from None
        raise RhoSearchError(f"study {study_name!r}: could not take its driver lease "
                             f"({name} keeps changing hands); try again")

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self._storage.set_study_user_attr(self.lease_id, "expires",
                                                  time.time() + self.ttl_s)
            except KeyError:  # deleted: another driver judged us gone and took over
                self.lost = True
                _thread.interrupt_main()  # stop the driver's work: the study is not ours now
                return
            except Exception:  # a storage hiccup: the next beat tries again
                continue

    @property
    def writes_allowed(self) -> bool:
        """Whether this driver may still write to the study (its lease was not taken over)."""
        return not self.lost

    def check(self) -> None:
        """Raises `RhoSearchError` once another driver has taken the lease over."""
        if self.lost:
            raise RhoSearchError(
                f"study {self.study_name!r}: another driver took this driver's lease over (it "
                f"was not renewed for {self.ttl_s:.0f} s: stopped, or cut off from the "
                "storage); stopped without writing more, the other driver owns the study now")

    def release(self) -> None:
        """Stops the heartbeat and frees the lease (only if it is still ours)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._storage.delete_study(self.lease_id)
        except Exception:  # taken over meanwhile, or the storage is gone: nothing to free
            pass

    def __enter__(self) -> DriverLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.check()  # a lost lease, not the KeyboardInterrupt the heartbeat raised, is the news


def _remove_if_stale(storage: optuna.storages.BaseStorage, name: str, study_name: str) -> None:
    """Deletes the lease `name` if its holder is gone; raises naming a live holder."""
    try:
        lease_id = storage.get_study_id_from_name(name)
        attrs = storage.get_study_user_attrs(lease_id)
    except KeyError:  # released between our create and this read
        return
    if "pid" not in attrs:  # being taken right now: look again after a moment
        time.sleep(_UNNAMED_GRACE_S)
        try:
            attrs = storage.get_study_user_attrs(lease_id)
        except KeyError:
            return
    if "pid" in attrs and _live(attrs):
        left = attrs.get("expires", 0) - time.time()
        raise RhoSearchError(
            f"study {study_name!r} is being driven by `rhosearch {attrs.get('command', '?')}` "
            f"on host {attrs.get('host')}, pid {attrs.get('pid')} (lease expires in "
            f"{max(0, left):.0f} s unless renewed); wait for it to finish or stop it, then "
            "run again with --resume (nothing was changed)")
    try:
        storage.delete_study(lease_id)
    except KeyError:  # another driver removed it first; the next pass sees its lease
        pass


def _live(attrs: dict[str, Any]) -> bool:
    """Whether a lease's holder may still be driving: on this host, its pid still runs as the
    same process; on another, its lease has not expired."""
    if attrs.get("host") == socket.gethostname():
        return _pid_runs(int(attrs["pid"]), attrs.get("pid_start"))
    return time.time() < float(attrs.get("expires", 0))
