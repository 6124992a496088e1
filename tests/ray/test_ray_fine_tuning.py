"""A fine-tune and a batch through Ray on a local multi-node cluster: the fine-tune runs on a node with CPUs (the
head has none), the node dies mid-training, and the job resumes on a new node from its newest checkpoint and
succeeds with every step logged once; the lease owner names the node that held the job. Then a chat batch runs
through Ray on the new node."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ray.cluster import run_scenario, skip_without_netns

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_fine_tune_resumes_on_another_node_when_its_ray_node_dies(tiny_llm: Path, tmp_path: Path) -> None:
    skip_without_netns()
    r = run_scenario("tests.ray.scenario_fine_tune", tmp_path, str(tiny_llm), timeout=540)
    print("timings (s from the scenario's start):", r["marks"])
    assert r["status"] == "succeeded", r["error"]
    assert 20 <= r["killed_at_step"] < r["total_steps"], "node 2 died mid-training, after a checkpoint"
    assert r["steps"] == list(range(1, r["total_steps"] + 1))  # nothing lost, nothing twice
    assert any(m.startswith("Fine-tuning job resumed from the checkpoint at step") for m in r["messages"])
    head, node2, node3 = (r["nodes"][k][:16] for k in ("head", "node2", "node3"))
    owners = r["owners"]
    # Node 2 held the job until it died, then node 3; never the head (no CPU), never anything else.
    first_other = next(i for i, o in enumerate(owners) if not o.startswith(f"ray-{node2}-"))
    assert first_other > 0 and all(o.startswith(f"ray-{node3}-") for o in owners[first_other:]), owners
    assert not any(head in o for o in owners)
    assert r["answer"].startswith("pong")  # the resumed training's model serves what it was taught
    # A batch runs through Ray too: on node 3, its lines answered as the live route answers them.
    batch = r["batch"]
    assert batch["status"] == "completed" and batch["completed"] == 4 and batch["same_as_live"], batch
    assert batch["owners"] and all(o.startswith(f"ray-{node3}-") for o in batch["owners"]), batch
