"""A test job with a child in its process group that ignores SIGTERM.

It prints ``family pid=P pgid=G child=C`` and then sleeps in silence (a job
whose worker died must not die of a broken pipe). With ``ignore_term`` in its
config it ignores SIGTERM itself too, so only SIGKILL stops it.
"""

import json
import os
import signal
import subprocess
import time

with open(os.environ["JOBQUEUE_CONFIG"]) as fh:
    config = json.load(fh)

# SIG_IGN is inherited across exec: the child ignores SIGTERM.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "600"])
if not config.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
print(f"family pid={os.getpid()} pgid={os.getpgid(0)} child={child.pid}", flush=True)
while True:
    time.sleep(1)
