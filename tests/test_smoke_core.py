from jobqueue.states import JobStatus
from tests.helpers import spec


def test_submit_claim_finish(queue, store, worker):
    from jobqueue.outcomes import Exit

    job, created = queue.submit(spec(), actor="operator")
    assert created and job.status is JobStatus.QUEUED
    assert job.queue_position == 1
    claimed = store.claim(worker, free_gpu_ids=[0, 1, 2, 3], slots=2)
    assert [c.id for c in claimed] == [job.id]
    done = store.finish(job.id, claimed[0].lease_token, Exit(exit_code=0), actor=worker.actor)
    assert done.status is JobStatus.COMPLETED
    events = queue.events(job.id)
    assert [e.action for e in events] == ["submit", "claim", "exit"]
