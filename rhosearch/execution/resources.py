"""What a search or `train-best` may use: the budget, Ray start-up, and per-trial resources.

    budget = parse_budget("6gpus,2h")
    started = start_ray(budget, address=None)   # a local Ray holding exactly the budget

Shared by `search.py` and `finalists.py`, so both check a budget the same way and start (or
join) Ray the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

# Read once when Ray is imported, so set before it: Ray's driver otherwise folds repeated worker
# lines ("[repeated 3x across cluster]"), hiding finalists' per-epoch lines, and colours each
# line's prefix, which leaves ANSI codes in redirected output. `rhosearch.cli` sets them first.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
if not sys.stdout.isatty():
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")

import ray  # noqa: E402

from rhosearch.errors import RhoSearchError
from rhosearch.values import Budget, default_cpus, parse_budget

__all__ = ["Budget", "budget_cpus", "check_local_gpus", "check_ray_address", "check_trial_fits",
           "cluster_address", "concurrent_trials", "one_node_share", "parse_budget", "start_ray",
           "trial_resources"]


def budget_cpus(budget: Budget) -> float:
    """The budget's CPUs, or those this process may use when it names none."""
    return budget.cpus or float(default_cpus())


def check_local_gpus(budget: Budget, *, address: str | None = None) -> None:
    """Refuses a budget with more GPUs than this machine has, before anything starts."""
    import torch

    if address or ray.is_initialized():
        return  # a cluster or a caller's Ray: checked against its resources when joined
    have_gpus = torch.cuda.device_count()
    if budget.gpus > have_gpus:
        raise RhoSearchError(f"budget asks for {budget.gpus:g} GPUs but this machine "
                             f"has {have_gpus}; lower --budget (e.g. --budget 2cpus)")


def start_ray(budget: Budget, *, address: str | None = None, log_to_driver: bool = False) -> bool:
    """Starts a local Ray holding exactly the budget (or joins `address`); True if it did.

    Worker output is forwarded to the driver only with `log_to_driver` (finalists print their
    epochs); the search prints its own progress lines.
    """
    if ray.is_initialized():  # a caller (e.g. a test declaring logical GPUs) owns Ray
        return False
    address = cluster_address(address)
    # ray.init installs a SIGTERM handler that kills Ray's processes and exits mid-write (a C++
    # abort, trials left RUNNING); the caller's handler (the CLI's: an interrupt) stays.
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address:
            _join_ray(address, log_to_driver=log_to_driver)
            have = ray.cluster_resources().get("GPU", 0)
            if budget.gpus > have:
                ray.shutdown()
                raise RhoSearchError(f"budget asks for {budget.gpus:g} GPUs but the cluster "
                                     f"at {address} has {have:g}; lower --budget")
            return True
        check_local_gpus(budget)
        cpus = budget_cpus(budget)
        _start_local_ray(cpus, budget.gpus, log_to_driver=log_to_driver)
        return True
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def _start_local_ray(cpus: int, gpus: float, *, log_to_driver: bool) -> None:
    """Starts a Ray of our own holding exactly the budget ("local"), even when `ray start` runs
    on this machine or a dead one left its address file (joining those is --address auto).

    No prestarted workers: Ray starts a few for a new driver, but Tune's trial actors carry a
    runtime_env (`PL_DISABLE_FORK`) and so get new ones; the prestarted sit idle and are
    killed, after taking CPU while the trials' workers import torch (measured on 2 cores,
    fresh driver, 3 pairs: the first trial started 0.4-1.7 s sooner). Ray (2.60) has no public
    setting for that: `_system_config` is passed here and nowhere else."""
    ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
             log_to_driver=log_to_driver, configure_logging=False,
             _system_config={"prestart_worker_first_driver": False})


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster a command joins: `--address`, else `RAY_ADDRESS`, else None (a local
    Ray of its own)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_ray_address(address: str | None) -> str | None:
    """Refuses a cluster address (`--address`, else `RAY_ADDRESS`) that is malformed, where
    nothing listens, or where something other than Ray listens, in seconds and before anything
    is written, not after Ray's minutes of retries; returns the address to join (None: none).

    `auto` is the cluster `ray start` recorded on this machine. Ray itself would fall back to
    any Ray it finds running here, which on a shared machine is another user's own local Ray
    (another `rhosearch search`): that is refused instead.
    """
    address = cluster_address(address)
    if address is None:
        return None
    given = address if address != os.environ.get("RAY_ADDRESS") else f"{address} (RAY_ADDRESS)"
    if address == "auto":
        recorded = _recorded_cluster()
        if recorded is None:
            raise RhoSearchError(f"--address {given}: no Ray cluster started with `ray start` "
                                 "is recorded on this machine; start one, or give the head's "
                                 "host:port")
        if recorded == "auto":  # this Ray does not say where it records: leave it to Ray
            return address
        address, given = recorded, f"{given} ({recorded}, recorded on this machine)"
    if address.startswith(("http://", "https://")):  # what `ray job submit` takes
        raise RhoSearchError(f"--address {given}: that is a Ray Jobs (dashboard) address; give "
                             "the head's host:port (default port 6379) or auto")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RhoSearchError(f"--address {given}: write host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            speaks_grpc = _answers_http2(connection)
    except OSError as exc:
        raise RhoSearchError(f"--address {given}: nothing answers at {host}:{port} "
                             f"({exc.strerror or exc}); start the cluster or drop --address "
                             "for a local Ray") from None
    # Ray retries a port that is not its own for minutes, printing warnings (the dashboard's
    # 8265 given as host:port, a mistyped port); with TLS on, gRPC is not plain HTTP/2.
    if not speaks_grpc and os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", ""):
        raise RhoSearchError(f"--address {given}: {host}:{port} answers, but not as a Ray "
                             "cluster (no gRPC); give the head's port that `ray start --head` "
                             "printed (default 6379), not the dashboard's")
    return address


def _recorded_cluster() -> str | None:
    """The address the last `ray start` on this machine recorded (RAY_TMPDIR or /tmp/ray),
    None if none; "auto" where this Ray version's record cannot be read."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:
        return "auto"
    return read_ray_address(None) or None


# The client's HTTP/2 connection preface and an empty SETTINGS frame (RFC 9113, 3.4): a gRPC
# server, as Ray's GCS and client server are, answers with a SETTINGS frame of its own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _answers_http2(connection: socket.socket, *, timeout_s: float = 5.0) -> bool:
    """Whether the server on `connection` answers an HTTP/2 preface with a SETTINGS frame."""
    head = b""
    try:
        connection.settimeout(timeout_s)
        connection.sendall(_HTTP2_PREFACE)
        while len(head) < 9 and (chunk := connection.recv(9 - len(head))):
            head += chunk
    except OSError:  # silence (a timeout) or a reset: not a gRPC server either way
        pass
    return len(head) == 9 and head[3] == 4  # a frame header whose type is SETTINGS


def _join_ray(address: str, *, log_to_driver: bool) -> None:
    """Joins the cluster at `address` (host:port, ray://host:port or auto), or says in one line
    why not."""
    given = address if address != os.environ.get("RAY_ADDRESS") else f"{address} (RAY_ADDRESS)"
    address = check_ray_address(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver)
    except (ConnectionError, ValueError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RhoSearchError(f"--address {given}: cannot join a Ray cluster: {first}") from None


def concurrent_trials(budget: Budget, resources: dict[str, float]) -> int:
    """How many trials of `resources` (from `trial_resources`) the budget runs side by side."""
    if resources["gpu"]:
        return max(1, int(budget.gpus // resources["gpu"]))
    return max(1, int((budget_cpus(budget)) // resources["cpu"]))


def one_node_share(cpus: float, gpus: float) -> float:
    """The CPUs one task asking for `cpus` (and `gpus`) can get on a single node of the running
    Ray: `cpus`, or the most any node with `gpus` GPUs has. A task asking for more than any node
    holds would wait for ever (a budget's CPUs summed over a cluster's nodes)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    fitting = [r.get("CPU", 0.0) for r in nodes if r.get("GPU", 0.0) >= gpus]
    if not fitting or max(fitting) < 1:
        raise RhoSearchError(f"no Ray node has {gpus:g} GPU(s) and a CPU for one task; "
                             "add such a node or lower --budget")
    return min(cpus, max(fitting))


def check_trial_fits(resources: dict[str, float]) -> None:
    """Refuses proxy-trial `resources` (from `trial_resources`) that no alive node of the
    running Ray holds: Tune would wait for them for ever (a cluster's CPUs are summed over its
    nodes, but a trial runs on one)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    cpus, gpus = resources["cpu"], resources["gpu"]
    if any(r.get("CPU", 0.0) >= cpus and r.get("GPU", 0.0) >= gpus for r in nodes):
        return
    most = max(nodes, key=lambda r: (r.get("GPU", 0.0), r.get("CPU", 0.0)), default={})
    flags = "--cpus-per-trial" + (" or --gpus-per-trial" if gpus else "")
    raise RhoSearchError(
        f"a proxy trial asks for {cpus:g} CPU" + (f" and {gpus:g} GPU" if gpus else "")
        + f" but no Ray node holds that (the largest: {most.get('CPU', 0.0):g} CPU, "
        f"{most.get('GPU', 0.0):g} GPU); lower {flags} or add such a node")


def trial_resources(
    budget: Budget, *, gpus_per_trial: float | None = None, cpus_per_trial: float | None = None
) -> dict[str, float]:
    """One proxy trial's resources: 1 GPU each on a GPU budget unless told, 1 CPU unless told."""
    gpus = gpus_per_trial
    if gpus is None:
        gpus = 1.0 if budget.gpus else 0.0
    cpus = cpus_per_trial or 1.0
    # A trial larger than the budget would wait for ever for resources that never come.
    if gpus < 0 or cpus <= 0:
        raise RhoSearchError("--gpus-per-trial and --cpus-per-trial must be positive")
    if gpus and gpus > budget.gpus:
        raise RhoSearchError(
            f"--gpus-per-trial {gpus:g} exceeds the budget's {budget.gpus:g} GPUs"
            + ("" if budget.gpus else "; give a GPU budget (e.g. --budget 1gpu) or drop it"))
    have_cpus = budget_cpus(budget)
    if cpus > have_cpus:
        raise RhoSearchError(f"--cpus-per-trial {cpus:g} exceeds the budget's {have_cpus:g} "
                             "CPUs; lower it or raise --budget")
    return {"cpu": cpus, "gpu": gpus}
