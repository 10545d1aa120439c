"""Bad input, as a new or a hostile user gives it: every case is refused with exit 2 and one line
on stderr that names the flag or file at fault, no traceback, and every file as it was.

Each case runs `rhosearch.cli.main` in this process (no Ray starts: every refusal comes before
it), in a folder holding the files the case needs; the folder's every file is compared before
and after.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import sqlite3
import struct
import threading
import time
import zlib
from pathlib import Path

import optuna
import pytest
import torch
from helpers import write_image_folder

from rhosearch.cli import main
from rhosearch.record.lease import lease_name
from rhosearch.record.study import default_storage_url, open_storage

# A search that would train (were it not refused): tiny, and never reaching Ray.
SEARCH = ["search", "--budget", "2cpus", "--stage", "proxy", "--noise-seeds", "0"]
SPACE_YAML = "backbone: mobilevit_xxs\nrho: {rho_3: [0, 1], rho_5: [4]}\n"


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` pixels: PIL refuses it as a bomb on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def _damaged_study(folder: Path) -> None:
    """A real study's SQLite file with garbage written into its middle."""
    storage = f"sqlite:///{folder / 'reports' / 's' / 'study.db'}"
    (folder / "reports" / "s").mkdir(parents=True)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    for value in range(200):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"x": "y" * 200}))
    del study
    db = folder / "reports" / "s" / "study.db"
    size = db.stat().st_size
    with db.open("r+b") as file:
        file.seek(size // 2)
        file.write(os.urandom(8192))
    (folder / "reports" / "s" / "trials.csv").write_text("number\n0\n")


def _files(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder under `root`: mode and content hash (folders: their name)."""
    files = {str(p.relative_to(root)): (p.stat().st_mode, _sha(p))
             for p in root.rglob("*") if p.is_file()}
    return files | {f"{p.relative_to(root)}/": (0, "") for p in root.rglob("*") if p.is_dir()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _setup(folder: Path, what: str | None) -> None:
    (folder / "space.yaml").write_text(SPACE_YAML)
    if what == "binary":
        (folder / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    elif what == "huge":
        (folder / "huge.yaml").write_text(
            "backbone: mobilevit_s\nrho:\n  rho_5: {min: 0, max: 1000000000, step: 1/1000}\n")
    elif what == "one-class":
        write_image_folder(folder / "pets", classes=("cat",))
    elif what == "bomb":
        write_image_folder(folder / "pets", per_class=2)
        for image in (folder / "pets" / "train" / "cat").iterdir():
            image.write_bytes(_png_claiming(30_000, 30_000))
    elif what == "damaged":
        _damaged_study(folder)
    elif what == "no-proxy":  # a study with one-shot scores only: nothing to resolve
        storage = open_storage(default_storage_url("s", folder / "reports"))
        study = optuna.create_study(study_name="s", storage=storage,
                                    directions=["maximize", "minimize"])
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={"stage": "proxy", "status": "infeasible", "rho": "0,0,1,0,4"}))
    elif what == "file":
        (folder / "taken").write_text("a user's file\n")
    elif what == "weights":
        (folder / "model.safetensors").write_bytes(b"not really weights")
    elif what == "real-weights":
        _save_small_weights(folder / "model.safetensors")
    elif what in ("finalists", "leased"):
        from helpers import hand_study

        (folder / "reports").mkdir()
        hand_study(folder / "reports", [("0,0,1/3,0,3", -500.0, 70.0)])
        if what == "finalists":
            (folder / "reports" / "hand" / "finalists" / "mobilevit_xxs__0_0_0_0_4").mkdir(
                parents=True)
        else:  # a live driver on another host holds the study
            storage = open_storage(default_storage_url("hand", folder / "reports"))
            lease = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                             study_name=lease_name("hand"))
            for key, value in dict(host="node7", pid=4242, command="search",
                                   expires=time.time() + 3600).items():
                storage.set_study_user_attr(lease, key, value)
    elif what == "run":
        (folder / "run").mkdir()
        (folder / "run" / "result.json").write_text('{"top1": 90.0}\n')
        (folder / "run" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    elif what == "symlinked-report":  # index.html a link to a user's own file
        from helpers import hand_study

        (folder / "reports").mkdir()
        hand_study(folder / "reports", [("0,0,1/3,0,3", -500.0, 70.0)])
        (folder / "mine.html").write_text("a user's page\n")
        (folder / "reports" / "hand" / "index.html").symlink_to(folder / "mine.html")
    elif what == "own-db":  # a user's SQLite database, not a study
        with sqlite3.connect(folder / "mine.db") as db:
            db.execute("CREATE TABLE customers (name TEXT)")
        db.close()
    elif what == "empty-db":
        (folder / "reports" / "s").mkdir(parents=True)
        (folder / "reports" / "s" / "study.db").write_bytes(b"")
    elif what in ("fifo", "loop"):
        write_image_folder(folder / "pets", per_class=2)
        if what == "fifo":
            os.mkfifo(folder / "pets" / "train" / "cat" / "waiting.png")
        else:
            (folder / "pets" / "train" / "cat" / "again").symlink_to(folder / "pets" / "train")
    elif what == "alias-bomb":  # 600 bytes; rho_3's aliases expand to 10**9 values
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
        (folder / "bomb.yaml").write_text(
            "\n".join(lines) + "\nbackbone: mobilevit_s\nrho: {rho_3: *a8}\n")
    elif what == "million":  # 11 choices in each of the 5 blocks: 161,051 configurations
        choices = ", ".join(f"{i}/10" for i in range(1, 11))
        (folder / "million.yaml").write_text(
            "backbone: mobilevit_s\nrho:\n" + "".join(
                f"  rho_{k}: [0, {choices}]\n" for k in range(1, 6)))
    elif what == "negative-limit":
        (folder / "limit.yaml").write_text(SPACE_YAML + "constraints: {max_overhead_pct: -100}\n")
    elif what == "mixed-keys":
        (folder / "mixed.yaml").write_text(
            "backbone: [mobilevit_s]\nrho: {rho_3: [0, 1], 5: [4]}\n")
        (folder / "recipe.yaml").write_text("epochs: 3\nfoo: 1\n1: 2\n")
    elif what == "searched":  # a study that searched the XXS space of space.yaml
        storage = open_storage(default_storage_url("s", folder / "reports"))
        study = optuna.create_study(study_name="s", storage=storage,
                                    directions=["maximize", "minimize"])
        study.set_user_attr("space", "space.yaml")
        study.set_user_attr("space_grid", "mobilevit_xxs rho_3 0,1 | rho_5 4")
    elif what == "mismatched-weights":  # the metadata says 1000 classes, the weights hold 10
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = _save_small_weights(folder / "real.safetensors")
        with safe_open(str(path), framework="pt") as handle:
            metadata = {**handle.metadata(), "num_classes": "1000"}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        save_file(tensors, folder / "model.safetensors", metadata=metadata)
        path.unlink()
    elif what == "fashion-labels":  # Fashion-MNIST's four files, one label out of 0..9
        _write_fashion_mnist(folder / "fm", bad_label=11)


def _write_fashion_mnist(root: Path, *, bad_label: int | None = None) -> Path:
    """Fashion-MNIST's four IDX files (gzipped, as Debian ships them) with 20 and 10 images."""
    import gzip

    root.mkdir(parents=True)
    for split, count in (("train", 20), ("t10k", 10)):
        images = struct.pack(">IIII", 2051, count, 28, 28) + bytes(784 * count)
        labels = [i % 10 for i in range(count)]
        if bad_label is not None and split == "train":
            labels[3] = bad_label
        (root / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (root / f"{split}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">II", 2049, count) + bytes(labels)))
    return root


def _save_small_weights(path: Path) -> Path:
    from rhosearch.core.model import create_model
    from rhosearch.core.space import parse_rho
    from rhosearch.deploy.export import save_weights

    torch.manual_seed(0)
    model = create_model(parse_rho("1/3,1/4,3", backbone="mobilevit_xxs"), num_classes=10)
    return save_weights(model.eval(), path)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

CASES = [
    # (command line, files it needs, what the one line must name)
    ("count --backbone nosuchnet --preset all", None, "--backbone 'nosuchnet'"),
    ("count --backbone nosuchnet --rho 1,1,4", None, "nosuchnet"),
    ("count --backbone mobilevit_xs --preset exmvit-928", None, "--backbone mobilevit_xs"),
    ("count --rho 1,1,abc", None, "'abc'"),
    ("count --resolution 0 --method closed-form", None, "resolution"),
    ("count --classes 0 --method closed-form", None, "classes"),
    ("search --seed -1", None, "--seed"),
    ("search --seed 99999999999", None, "--seed"),
    ("train --seed -1", None, "--seed"),
    ("train-best --study s --seed 4294967296", None, "--seed"),
    ("search --space binary.yaml", "binary", "binary.yaml"),
    ("search --space huge.yaml", "huge", "huge.yaml"),
    ("search --space nosuchfile.yaml", None, "nosuchfile.yaml"),
    ("search --space . ", None, "'.'"),
    ("search --space space.yaml --set epochs=abc", "space", "'epochs'"),
    ("search --space space.yaml --set nosuchkey=1", "space", "'nosuchkey'"),
    ("search --space space.yaml --set epochs", "space", "--set 'epochs'"),
    ("train --set epochs=abc", None, "'epochs'"),
    ("search --space space.yaml --cpus-per-trial 100", "space", "--cpus-per-trial 100"),
    ("search --space space.yaml --gpus-per-trial 1", "space", "--gpus-per-trial 1"),
    ("search --space space.yaml --cpus-per-trial -1", "space", "--cpus-per-trial"),
    ("search --space space.yaml --address bogus:1", "space", "--address bogus:1"),
    ("search --space space.yaml --address 127.0.0.1:1", "space", "--address 127.0.0.1:1"),
    ("search --space space.yaml --address nonsense", "space", "--address nonsense"),
    ("search --space space.yaml --address http://127.0.0.1:8265", "space", "Ray Jobs"),
    ("search --space space.yaml --storage-path /proc/rhosearch", "space", "--storage-path"),
    ("search --space space.yaml --storage-path nosuch://x", "space", "--storage-path"),
    ("search --space space.yaml --data pets", "one-class", "one class folder"),
    ("train --data pets", "one-class", "one class folder"),
    ("search --space space.yaml --study s --resume", "damaged", "study.db is damaged"),
    ("search --space space.yaml --study s", "damaged", "study.db is damaged"),
    ("report --study s", "damaged", "study.db is damaged"),
    ("report --study s --format csv", "damaged", "study.db is damaged"),
    ("train-best --study s", "damaged", "study.db is damaged"),
    ("search --space space.yaml --trials 0", "space", "--trials 0"),
    ("search --space space.yaml --noise-seeds -1", "space", "--noise-seeds -1"),
    ("search --space space.yaml --resolve-seeds -1", "space", "--resolve-seeds -1"),
    ("search --space space.yaml --resolve-seeds abc", "space", "--resolve-seeds 'abc'"),
    ("search --space space.yaml --resolve-contenders 0", "space", "--resolve-contenders 0"),
    ("search --space space.yaml --study s --stage resolve", "no-proxy", "no finished proxy"),
    ("search --space space.yaml --study nosuch --stage resolve", None, "no study 'nosuch'"),
    ("search --space space.yaml --study ../x", "space", "'../x'"),
    ("search --space space.yaml --budget 4tpus", "space", "4tpus"),
    ("search --space space.yaml --budget 64gpus", "space", "GPUs"),
    ("search --space space.yaml --storage nosuch://x", "space", "nosuch://x"),
    ("search --space space.yaml --data nosuchdata", "space", "nosuchdata"),
    ("train --device meta", None, "--device meta"),
    ("train --device nonsense", None, "--device 'nonsense'"),
    pytest.param("train --device cuda", None, "--device cuda", marks=NO_GPU),
    pytest.param("train --device cuda:7", None, "--device cuda:7", marks=NO_GPU),
    ("train --out taken", "file", "--out taken"),
    ("train --out taken/run", "file", "taken"),
    ("train --out /proc/rhosearch-run", None, "--out /proc/rhosearch-run"),
    ("train --data pets --set workers=0 --set epochs=1 --set resolution=32 --no-progress",
     "bomb", "decompression bomb"),
    ("train --recipe binary.yaml", "binary", "binary.yaml"),
    ("train --recipe nosuchrecipe", None, "nosuchrecipe"),
    ("train-best --study nosuch", None, "nosuch"),
    ("train-best --study s --gpus-per-trial 1 --budget 2cpus", "damaged", "damaged"),
    ("report --study nosuch", None, "nosuch"),
    ("export --weights nosuch.safetensors --out m.onnx", None, "nosuch.safetensors"),
    ("export --weights model.safetensors --out model.safetensors", "weights",
     "model.safetensors"),
    ("export --weights model.safetensors --out m.onnx", "weights", "model.safetensors"),
    ("export --weights model.safetensors --out ./model.safetensors", "real-weights",
     "--out model.safetensors is the --weights file"),
    ("export --weights model.safetensors --out .", "real-weights", "--out . is a folder"),
    ("train --out run", "run", "--out run holds a run"),
    ("train-best --study hand", "finalists", "train-best already ran"),
    ("train-best --study hand --resume", "leased", "host node7, pid 4242"),
    ("search --study hand --resume --space reports/space.yaml", "leased", "host node7, pid 4242"),
    # --- issue 22: one case per class of what a new user met ---------------------------------
    # Lost or changed files: a run resumed where there is nothing to resume, a report written
    # through a symlink, a user's own SQLite file adopted, a 0-byte study.db adopted.
    ("train --resume --out run", "run", "nothing to resume"),
    ("report --study hand", "symlinked-report", "is a symlink"),
    ("report --study s --storage sqlite:///mine.db", "own-db", "without Optuna's tables"),
    ("search --space space.yaml --study s --storage sqlite:///mine.db", "own-db",
     "without Optuna's tables"),
    ("search --space space.yaml --study s", "empty-db", "is empty, not a study"),
    # Hangs: a FIFO or a symlink loop in an image folder, an epoch count planned up front, a
    # YAML alias bomb, a space too large to score.
    ("train --data pets", "fifo", "is a FIFO"),
    ("train --data pets", "loop", "symlink loop"),
    ("train --epochs 100000000", None, "--epochs 100000000 is outside"),
    ("train --set epochs=100000000", None, "'epochs'"),
    ("search --space bomb.yaml", "alias-bomb", "aliases expand"),
    ("search --space million.yaml", "million", "configurations; a space holds at most"),
    # Silent exit 0 on bad input: a limit no configuration meets, an empty --rho, a budget of
    # no time.
    ("search --space limit.yaml", "negative-limit", "max_overhead_pct"),
    ("count --rho ''", None, "--rho '' is empty"),
    ("search --space space.yaml --budget 2cpus,0h", "space", "0h leaves no time"),
    # Tracebacks: fractional CPUs, NaN shares, another space on --resume, weights that do not
    # match their metadata, out-of-range labels, mixed YAML keys, infinite recipe values, huge
    # sizes, a long study name.
    ("search --space space.yaml --budget 1.5cpus", "space", "whole number of CPUs"),
    ("search --space space.yaml --cpus-per-trial nan", "space", "--cpus-per-trial 'nan'"),
    ("train-best --study s --gpus-per-trial nan", None, "--gpus-per-trial 'nan'"),
    ("search --study s --resume --space exmobilevit_s", "searched", "searched another space"),
    ("export --weights model.safetensors --out m.onnx", "mismatched-weights",
     "do not match its metadata"),
    ("train --data fashion-mnist --data-root fm", "fashion-labels", "label 11"),
    ("search --space mixed.yaml", "mixed-keys", "backbone"),
    ("train --recipe recipe.yaml", "mixed-keys", "recipe.yaml"),
    ("train --set epochs=.inf", None, "'epochs'"),
    ("count --rho 1,1,1000000000 --method closed-form", None, "above 16"),
    ("count --resolution 100000 --method closed-form", None, "--resolution 100000"),
    ("count --classes 1000000000 --method closed-form", None, "--classes 1000000000"),
    ("report --study " + "x" * 300, None, "is not a study name"),
    ("search --space space.yaml --study " + "x" * 300, "space", "is not a study name"),
]


def _id(case) -> str:
    argv = case.values[0] if hasattr(case, "values") else case[0]
    return argv.replace(" ", "_")[:70]


@pytest.mark.parametrize("argv, setup, names", CASES, ids=[_id(c) for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_changes_nothing(
        tmp_path, monkeypatch, capsys, argv, setup, names):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _setup(tmp_path, setup)
    argv = ["" if word == "''" else word for word in argv.split()]
    if argv[0] == "search" and "--space" not in argv:
        argv += ["--space", "exmobilevit_s"]
    if argv[0] == "search":
        argv = [*SEARCH, *argv[1:]]
    before = _files(tmp_path)
    started = time.time()
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse's own refusals (e.g. --seed's type)
        code = exited.code
    wall = time.time() - started
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert names in lines[0], lines[0]
    assert _files(tmp_path) == before, "a refused command changed files"
    assert wall < 30, f"took {wall:.0f} s to refuse"


def test_a_stale_ray_address_file_is_ignored(tmp_path, monkeypatch):
    """A dead `ray start` leaves /tmp/ray/ray_current_cluster behind; a search starts its own
    Ray all the same (joining one is --address auto), never `num_cpus ... must not be
    provided`."""
    import ray

    from rhosearch.execution.resources import Budget, start_ray

    temp = Path("/tmp") / f"rr{os.getpid()}"  # short: Ray's socket paths must stay < 108
    (temp / "ray").mkdir(parents=True, exist_ok=True)
    (temp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        assert start_ray(Budget(cpus=1))
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_sqlite_quick_check_accepts_a_healthy_study(tmp_path):
    from rhosearch.record.study import open_storage

    url = f"sqlite:///{tmp_path / 'ok.db'}"
    optuna.create_study(study_name="s", storage=url)
    open_storage(url)  # no refusal
    assert sqlite3.connect(tmp_path / "ok.db").execute("PRAGMA quick_check").fetchone() == ("ok",)


def test_a_study_left_mid_write_by_a_killed_driver_opens_rolled_back(tmp_path):
    """kill -9 inside a write transaction leaves a hot journal: the next open rolls it back
    (the resume a kill -9 asks for), it is no damage."""
    import signal
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'k.db'}"
    optuna.create_study(study_name="s", storage=url).set_user_attr("kept", 1)
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sqlite3\n"
        "c = sqlite3.connect('k.db', isolation_level=None)\n"
        "c.execute('PRAGMA cache_size=1')  # spill to the file mid-transaction\n"
        "c.execute('BEGIN')\n"
        "for i in range(200):\n"
        "    c.execute('INSERT INTO study_user_attributes (study_id, key, value_json) '\n"
        "              'VALUES (1, ?, ?)', (f'k{i}', 'y' * 4000))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")], cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "k.db-journal").is_file()
    study = optuna.load_study(study_name="s", storage=open_storage(url))  # not "damaged"
    assert study.user_attrs == {"kept": 1}  # the half-written transaction is gone


def test_an_export_that_fails_its_check_leaves_the_file_that_was_there(tmp_path):
    from rhosearch.deploy.export import export_onnx, load_model
    from rhosearch.errors import RhoSearchError

    model = load_model(_save_small_weights(tmp_path / "m.safetensors"))
    (tmp_path / "m.onnx").write_bytes(b"an earlier export")
    with pytest.raises(RhoSearchError, match="nothing was written"):
        export_onnx(model, tmp_path / "m.onnx", resolution=32, atol=-1.0, dynamic_size=False)
    assert (tmp_path / "m.onnx").read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.safetensors"]


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n"],
                         ids=["silent", "http1"])
def test_an_address_where_something_else_listens_is_refused_in_seconds(
        tmp_path, monkeypatch, capsys, answer):
    """A port that accepts but is not Ray's (the dashboard's 8265, a typo): Ray itself retries
    it for minutes (over 3 min measured, with warnings); refused at once, before Ray starts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                held.append(connection)
                if answer:
                    connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    started = time.time()
    try:
        code = main([*SEARCH, "--space", "exmobilevit_s", "--address",
                     f"127.0.0.1:{server.getsockname()[1]}"])
    finally:
        server.close()
        for connection in held:
            connection.close()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "answers, but not as a Ray cluster" in err
    assert time.time() - started < 30
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("record, names", [
    (None, "no Ray cluster started with `ray start` is recorded"),
    ("127.0.0.1:1", "(127.0.0.1:1, recorded on this machine): nothing answers at 127.0.0.1:1"),
], ids=["none", "stale"])
def test_address_auto_joins_only_the_recorded_cluster(tmp_path, monkeypatch, capsys, record,
                                                      names):
    """Ray's `auto` falls back to any Ray running on the machine (another user's own search on
    a shared one); rhosearch joins only what `ray start` recorded, and checks it first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp = tmp_path / "raytmp"
    (temp / "ray").mkdir(parents=True)
    if record:
        (temp / "ray" / "ray_current_cluster").write_text(record)
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    code = main([*SEARCH, "--space", "exmobilevit_s", "--address", "auto"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--address auto{' ' if record else ': '}{names}" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["raytmp", "ray"] + (["ray_current_cluster"] if record else []))
