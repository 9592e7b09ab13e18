"""A test job that needs a while to checkpoint after SIGTERM.

It reports progress, waits for SIGTERM, then spends ``stop_seconds`` (from its
config) "writing" a checkpoint, reports it and exits 0.
"""

import json
import os
import signal
import sys
import time

stopping = False


def on_sigterm(signum, frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_sigterm)
with open(os.environ["JOBQUEUE_CONFIG"]) as fh:
    config = json.load(fh)
print("::jobqueue:: " + json.dumps({"progress": 0.1, "step": 1}), flush=True)
while not stopping:
    time.sleep(0.05)
print("checkpointing", flush=True)
time.sleep(float(config.get("stop_seconds", 1)))
uri = os.path.join(os.environ["JOBQUEUE_CHECKPOINT_DIR"], "slow-1")
print("::jobqueue:: " + json.dumps({"checkpoint": uri, "step": 1}), flush=True)
print("checkpointed", flush=True)
sys.exit(0)
