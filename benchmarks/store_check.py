"""What the job-store check (`JobStore.check_shared`) adds to a command on a cluster.

    python benchmarks/store_check.py              # 2 nodes, 3 rounds
    python benchmarks/store_check.py --nodes 3 --rounds 5

A `ray.cluster_utils.Cluster` on this machine: a head with no CPU (where this driver runs, as
`rhosearch` does on a head) and `--nodes` nodes of 1 CPU. Each round times, in this process:
- check: `check_shared` on fresh nodes (their first task: Ray starts a worker on each), then
  again on the same nodes (warm: what a second command would pay is the cold figure again, since
  every command is a new Ray job with new workers);
- baseline: as many fresh nodes added, and one no-op task with no CPU pinned to each (Ray's own
  price of a first task per node, which the check cannot avoid).
The ratio check / baseline says how much the check costs beyond reaching each node at all.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rhosearch.execution.jobstore import JobStore


def _noop() -> None:
    return None


def _add_nodes(cluster: Cluster, count: int) -> list[str]:
    before = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    for _ in range(count):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    while len(added := {node["NodeID"] for node in ray.nodes() if node["Alive"]} - before) < count:
        time.sleep(0.2)
    return sorted(added)


def _one_round(nodes: int) -> dict[str, float]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0,
                                                            "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = JobStore.for_study("bench", reports_dir=Path(folder))
            _add_nodes(cluster, nodes)
            started = time.perf_counter()
            store.check_shared()
            cold = time.perf_counter() - started
            started = time.perf_counter()
            store.check_shared()
            warm = time.perf_counter() - started
            fresh = _add_nodes(cluster, nodes)
            noop = ray.remote(num_cpus=0)(_noop)
            started = time.perf_counter()
            ray.get([noop.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                node, soft=False)).remote() for node in fresh])
            baseline = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"cold": cold, "warm": warm, "baseline": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = [_one_round(args.nodes) for _ in range(args.rounds)]
    for i, times in enumerate(rounds):
        print(f"round {i + 1}: check cold {times['cold']:.2f} s, warm {times['warm']:.3f} s; "
              f"first no-op task per node {times['baseline']:.2f} s; "
              f"ratio {times['cold'] / times['baseline']:.2f}", flush=True)
    for key in ("cold", "warm", "baseline"):
        values = [times[key] for times in rounds]
        spread = f" +- {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"{key}: median {statistics.median(values):.3f} s{spread} (n={len(values)})")


if __name__ == "__main__":
    main()
