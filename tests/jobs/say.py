"""A test job driven by its config: prints lines, shows its environment, exits.

Config keys: ``stdout`` and ``stderr`` (lists of lines to print; ``line_seconds``
apart on stdout), ``env`` (print one
log line ``ENV {json}`` with the job's environment, working folder and config
file), ``checkpoint`` (a URI to report as a checkpoint at step 7), ``signal`` (a
signal to kill itself with), ``exit`` (the exit code; or a map from attempt
number to exit code).
"""

import json
import os
import sys
import time

KEYS = (
    "JOBQUEUE_JOB_ID",
    "JOBQUEUE_ATTEMPT",
    "JOBQUEUE_CONFIG",
    "JOBQUEUE_CHECKPOINT_DIR",
    "JOBQUEUE_RESUME_FROM",
    "CUDA_VISIBLE_DEVICES",
    "DATABASE_URL",
    "JOBQUEUE_DATABASE_URL",
    "TEST_KIND_ENV",
)

with open(os.environ["JOBQUEUE_CONFIG"]) as fh:
    config = json.load(fh)

if config.get("env"):
    shown = {key: os.environ.get(key) for key in KEYS}
    shown["cwd"] = os.getcwd()
    shown["config_file"] = config
    shown["checkpoint_dir_exists"] = os.path.isdir(os.environ.get("JOBQUEUE_CHECKPOINT_DIR", ""))
    print("ENV " + json.dumps(shown), flush=True)
for line in config.get("stdout", []):
    print(line, flush=True)
    time.sleep(config.get("line_seconds", 0))
for line in config.get("stderr", []):
    print(line, file=sys.stderr, flush=True)
if config.get("checkpoint"):
    print("::jobqueue:: " + json.dumps({"checkpoint": config["checkpoint"], "step": 7}), flush=True)
if config.get("signal"):
    os.kill(os.getpid(), int(config["signal"]))
code = config.get("exit", 0)
if isinstance(code, dict):
    code = code.get(os.environ["JOBQUEUE_ATTEMPT"], 0)
sys.exit(int(code))
