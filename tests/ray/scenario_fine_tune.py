"""Run inside a private network namespace by test_ray_fine_tuning.py: a fine-tune runs as a Ray task on node 2,
node 2 is killed after a checkpoint, node 3 joins, and the job resumes there; then a chat batch runs through Ray.
Writes what happened (events, lease owners, node ids, timings, the batch) to OUT/result.json; the test judges it.

Usage: python -m tests.ray.scenario_fine_tune OUT MODEL_DIR"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import make_client
from tests.llm import all_events, greedy, llm_entry, pong_file, supervised
from tests.ray.cluster import alive_nodes, ray_cluster, ray_server, ray_settings, wait

N_EXAMPLES, BATCH, EPOCHS = 20, 2, 12  # 10 steps an epoch, a checkpoint each epoch: 120 steps
KILL_AFTER = "Checkpoint created at step 20 "


def run_batch(server: Any, client: Any) -> dict[str, Any]:
    """A chat batch through Ray (on node 3, the one node with CPUs now): its status, who held its lease, and
    whether each line answered as the live route does."""
    bodies = [{"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 5,
               "messages": [{"role": "user", "content": f"ping {i}"}]} for i in range(4)]
    text = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": b})
                     for i, b in enumerate(bodies))
    upload = client.files.create(file=("b.jsonl", text.encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    owners: set[str] = set()

    def ended() -> Any:
        record = server.call(server.services.meta.batches.get_batch_any(batch.id))
        if record is not None and record.lease_owner:
            owners.add(record.lease_owner)
        return record is not None and record.status in ("completed", "failed", "cancelled", "expired") and record

    done = wait("the batch's end", ended, 240, every=0.05)
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()] \
        if done.output_file_id else []
    live = [client.chat.completions.create(**b).choices[0].message.content for b in bodies]
    return {"status": done.status, "owners": sorted(owners), "completed": done.request_completed,
            "same_as_live": [x["response"]["body"]["choices"][0]["message"]["content"] for x in lines] == live}


def main(out: Path, model_dir: Path) -> None:
    t0 = time.monotonic()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - t0, 2)

    owners: list[str] = []
    with ray_cluster(out, {"node2": {"num_cpus": 2}}) as cluster:
        mark("cluster_up")
        settings = ray_settings(out / "data", cluster, models=[llm_entry(model_dir)])
        with ray_server(settings) as server:
            mark("worker_joined")
            nodes = wait("the head and node 2", lambda: len(alive_nodes()) == 2 and alive_nodes(), 60)
            head = next(n for n, r in nodes.items() if "node:__internal_head__" in r)
            node2 = next(n for n in nodes if n != head)
            client = make_client(server.base_url, strict=False)
            job = client.fine_tuning.jobs.create(
                model="gpt-4o-mini", training_file=pong_file(client, N_EXAMPLES), seed=9,
                method=supervised(n_epochs=EPOCHS, batch_size=BATCH, learning_rate_multiplier=20))
            mark("job_created")

            # Who holds the lease, sampled all along: the test checks which node ran each part.
            stop_watch = threading.Event()

            def watch_owner() -> None:
                while not stop_watch.is_set():
                    record = server.call(server.services.meta.jobs.get_job_any(job.id))
                    owner = record.lease_owner if record else None
                    if owner and (not owners or owners[-1] != owner):
                        owners.append(owner)
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch_owner, daemon=True)
            watcher.start()
            try:
                wait("the first step", lambda: any(e.type == "metrics" for e in all_events(client, job.id)), 180,
                     every=0.1)
                mark("first_step")
                wait(f"the event {KILL_AFTER!r}",
                     lambda: any(e.message.startswith(KILL_AFTER) for e in all_events(client, job.id)), 180,
                     every=0.02)
                cluster.kill("node2")
                mark("node2_killed")
                killed_at = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"][-1]
                cluster.add_node("node3", num_cpus=2)
                mark("node3_up")
                node3 = next(n for n in wait("node 3", lambda: set(alive_nodes()) - {head, node2}, 60))
                wait("the resume", lambda: any(e.message.startswith("Fine-tuning job resumed")
                                               for e in all_events(client, job.id)), 180, every=0.1)
                mark("resumed")
                done = wait("the job's end", lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in (
                    "succeeded", "failed", "cancelled") and j, 240, every=0.1)
                mark("ended")
            finally:
                stop_watch.set()
                watcher.join(5)
            events = all_events(client, job.id)
            answer = greedy(client, done.fine_tuned_model) if done.status == "succeeded" else ""
            mark("answered")
            batch = run_batch(server, client)
            mark("batch_done")
        mark("server_stopped")
    mark("cluster_stopped")
    result: dict[str, Any] = {
        "status": done.status, "error": done.error.model_dump() if done.error else None,
        "total_steps": N_EXAMPLES // BATCH * EPOCHS, "killed_at_step": killed_at,
        "steps": [e.data["step"] for e in events if e.type == "metrics"],
        "messages": [e.message for e in events],
        "owners": owners, "nodes": {"head": head, "node2": node2, "node3": node3},
        "answer": answer, "marks": marks, "batch": batch,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
