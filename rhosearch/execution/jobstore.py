"""Where Ray jobs keep their files (`--storage-path`), and how those files reach the driver.

    store = JobStore.for_study("demo", reports_dir=Path("reports"))   # or a bucket, a shared FS
    with store.workdir("trials/0003_key") as folder:    # in a worker, on any node
        train_config(..., out_dir=folder, on_epoch=lambda m: store.push(folder, "trials/0003_key"))
    store.pull("trials/0003_key", Path("reports/demo/trials/0003_key"))          # in the driver

Why. On one machine a worker could write straight into `reports/<study>/`, but on a cluster a
worker on another node writes to its own disk and the driver never sees the file. So every job
(a proxy trial, the supernet, a finalist) works in a scratch folder on its own node, copies that
folder into the store after every epoch, and the driver alone writes `reports/<study>/`, pulling
each finished job's results out of the store. Checkpoints stay in the store, where a resumed job
(on whichever node) finds them.

The store is any URI pyarrow's file systems accept, as for Ray Tune's own `storage_path` (Tune
keeps its experiment state beside it): a local folder on one machine (the default,
`reports/<study>/ray`), a shared file system or a bucket (`s3://...`, `gs://...`) on a cluster.
Files are copied here with `pyarrow.fs`, as Ray copies checkpoints, rather than reported as
`tune.Checkpoint`s: Tune names a trial's checkpoints by its Tune trial id, which a resumed
search does not keep, and tasks and Ray Train runs need the same place.

A cluster. The default store is a folder on the driver's disk, which a worker node on another
machine does not see: it would write to its own disk, and the driver would miss the files only
after the job had trained. So before a study is created, `check_shared` has a Ray task on each
other node that can run a job look for a token the driver wrote into the store, and write one
back; a node that fails is named in a one-line refusal asking for a shared `--storage-path`.
Refusing was chosen over returning results through Ray's object store: that would serve the
small files, but leave resumable checkpoints on nodes that may be gone, and `train-best
--resume` needs them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from rhosearch.errors import RhoSearchError
from rhosearch.training.checkpoint import write_atomic

__all__ = ["CHECKPOINTS", "JobStore"]

# A job's resume state: kept in the store, never copied into reports/ (~60 MB each).
CHECKPOINTS = ("checkpoint.pt*",)


@dataclass(frozen=True)
class JobStore:
    """A folder of job folders (`trials/0003_key`, `supernet`, `finalists/<key>`) at a URI.

    Args:
        uri: a local folder or any URI pyarrow's file systems accept.
    """

    uri: str

    @classmethod
    def for_study(cls, study: str, *, reports_dir: Path,
                  storage_path: str | None = None) -> JobStore:
        """The study's store: `<storage_path>/<study>/jobs`, by default under
        `reports/<study>/ray/` (a local folder is made absolute: workers have their own
        working directories)."""
        if storage_path is None:
            return cls(str((Path(reports_dir) / study / "ray" / "jobs").resolve()))
        base = storage_path if "://" in storage_path else str(Path(storage_path).resolve())
        return cls(f"{base.rstrip('/')}/{study}/jobs")

    @property
    def tune_path(self) -> str:
        """Where Ray Tune and Ray Train keep their experiment state: beside the jobs."""
        return self.uri.rsplit("/", 1)[0]

    def _fs(self):
        import pyarrow.fs

        if "://" not in self.uri:
            return pyarrow.fs.LocalFileSystem(), self.uri
        try:
            return pyarrow.fs.FileSystem.from_uri(self.uri)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowException, OSError) as exc:
            raise RhoSearchError(f"--storage-path {self.uri}: {_first_line(exc)}; give a folder "
                                 "or a URI such as s3://bucket/path") from None

    def check_writable(self) -> None:
        """Writes and deletes a probe file, so an unusable store is refused before a job runs;
        folders it had to make for the probe are removed again (a refused command leaves
        nothing behind)."""
        fs, base = self._fs()
        probe = f"{base}/.probe-{uuid.uuid4().hex}"
        try:
            with _made(fs, base):
                with fs.open_output_stream(probe) as stream:
                    stream.write(b"ok")
                fs.delete_file(probe)
        except Exception as exc:  # pyarrow raises OSError subclasses and its own ArrowException
            raise RhoSearchError(f"--storage-path: cannot write to {self.tune_path} "
                                 f"({_first_line(exc)}); give a folder or bucket every Ray node "
                                 "can write") from None

    def check_shared(self, *, timeout_s: float = 120.0) -> None:
        """On a Ray cluster (Ray must be up), refuses a store on a local path that some other
        node able to run a job does not share with this driver: a task pinned to each such
        node must find the token the driver wrote there and write one back that the driver
        reads. A bucket is the same bucket from every node; the driver's own node is not
        asked.

        Args:
            timeout_s: how long a node may take to answer before it is named as not answering.
        """
        import pyarrow.fs
        import ray

        fs, base = self._fs()
        here = ray.get_runtime_context().get_node_id()
        nodes = {node["NodeID"]: node for node in ray.nodes() if node.get("Alive")
                 and node["NodeID"] != here and (node["Resources"].get("CPU", 0)
                                                 or node["Resources"].get("GPU", 0))}
        if not isinstance(fs, pyarrow.fs.LocalFileSystem) or not nodes:
            return
        token = uuid.uuid4().hex
        probe = Path(base) / f".shared-{token}"
        with _made(fs, base):
            probe.write_text(token)
            try:
                blind = _ask_nodes(list(nodes), probe, token, timeout_s=timeout_s)
            finally:
                for path in Path(base).glob(f"{probe.name}*"):  # the token and the answers
                    path.unlink(missing_ok=True)
        if blind:
            named = "; ".join(f"{nodes[n]['NodeManagerAddress']} (node {n[:8]}): {why}"
                              for n, why in blind.items())
            raise RhoSearchError(
                f"the job store {self.tune_path} is a local path, and {len(blind)} of the "
                f"{len(nodes)} other Ray node(s) that run jobs do not see it ({named}); pass "
                "--storage-path /shared/path (a folder every node mounts at that path) or a "
                "bucket URI such as s3://bucket/path (nothing was started)")

    def push(self, folder: Path, job: str, *, skip: tuple[str, ...] = ()) -> None:
        """Copies the files under `folder` into the job's folder in the store, each written to
        a temporary name and then moved, so a reader never sees half a file."""
        fs, base = self._fs()
        for path in sorted(Path(folder).rglob("*")):
            relative = path.relative_to(folder).as_posix()
            if not path.is_file() or path.name.endswith(".tmp") or _matches(path.name, skip):
                continue
            target = f"{base}/{job}/{relative}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with path.open("rb") as source, fs.open_output_stream(f"{target}.tmp") as stream:
                shutil.copyfileobj(source, stream, length=1 << 20)
            fs.move(f"{target}.tmp", target)

    def pull(self, job: str, folder: Path, *, skip: tuple[str, ...] = ()) -> list[Path]:
        """Copies the job's files from the store into `folder` (atomically, file by file);
        returns the files written (none when the store has no such job)."""
        import pyarrow.fs

        fs, base = self._fs()
        selector = pyarrow.fs.FileSelector(f"{base}/{job}", recursive=True, allow_not_found=True)
        written = []
        for info in fs.get_file_info(selector):
            name = info.path.rsplit("/", 1)[-1]
            if info.type != pyarrow.fs.FileType.File or name.endswith(".tmp") or _matches(
                    name, skip):
                continue
            target = Path(folder) / info.path[len(f"{base}/{job}/"):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as stream:
                write_atomic(target, lambda out, stream=stream: shutil.copyfileobj(
                    stream, out, length=1 << 20))
            written.append(target)
        return written

    def drop(self, job: str, patterns: tuple[str, ...] = CHECKPOINTS) -> None:
        """Deletes the job's files matching `patterns` from the store (e.g. a finished proxy
        trial's checkpoint, which nothing resumes)."""
        import pyarrow.fs

        fs, base = self._fs()
        selector = pyarrow.fs.FileSelector(f"{base}/{job}", recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type == pyarrow.fs.FileType.File and _matches(info.path.rsplit("/", 1)[-1],
                                                                  patterns):
                fs.delete_file(info.path)

    @contextmanager
    def workdir(self, job: str, *, resume: bool = False) -> Iterator[Path]:
        """A scratch folder on this node for one job, removed afterwards; with `resume` it
        starts with the job's files from the store (its checkpoint), else empty."""
        key = hashlib.sha1(self.uri.encode()).hexdigest()[:12]
        folder = (Path(tempfile.gettempdir()) / f"rhosearch-{os.getuid()}" / key / job
                  / f"pid{os.getpid()}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            if resume:
                self.pull(job, folder)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _ask_nodes(node_ids: list[str], probe: Path, token: str, *,
               timeout_s: float) -> dict[str, str]:
    """Runs `_answer_probe` on each node (no CPU asked: it runs beside busy jobs); returns
    what went wrong on each node that does not share `probe` with this driver."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    look = ray.remote(num_cpus=0, max_retries=0)(_answer_probe)
    asked = {look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id, soft=False)).remote(str(probe), token, node_id): node_id for node_id in node_ids}
    ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=timeout_s)
    blind = {}
    for ref, node_id in asked.items():
        if ref not in ready:
            ray.cancel(ref, force=True)
            blind[node_id] = f"no answer in {timeout_s:g} s"
            continue
        try:
            problem = ray.get(ref)
        except Exception as exc:  # e.g. rhosearch not importable on that node
            problem = _first_line(getattr(exc, "cause", None) or exc)
        if problem is None and not probe.with_name(f"{probe.name}.{node_id}").is_file():
            problem = "its answer was written where this driver does not see it"
        if problem is not None:
            blind[node_id] = problem
    return blind


def _answer_probe(path: str, token: str, node_id: str) -> str | None:
    """A Ray task on one node: None when `path` holds `token` (this node sees the driver's
    store), after writing `<path>.<node_id>` back; else what it found. Writes nothing where
    it does not see the token, so a node with its own disk is left as it was."""
    try:
        if Path(path).read_text() != token:
            return "it holds another file at that path"
        Path(f"{path}.{node_id}").write_text(token)
    except FileNotFoundError:
        return "not found there"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


@contextmanager
def _made(fs, base: str) -> Iterator[None]:
    """Makes the folder `base` (and missing parents) for a probe, and removes the topmost one
    it made afterwards."""
    import pyarrow.fs

    made, path = None, base
    while path and fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        made, path = path, path.rsplit("/", 1)[0]
    try:
        fs.create_dir(base, recursive=True)
        yield
    finally:
        if made is not None:
            try:
                fs.delete_dir(made)
            except OSError:
                pass


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch(name, pattern) for pattern in patterns)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
