"""launch/tokenize.py as test_tokenize_split_and_resume launches it, plus two test-only flags that
reach the job through run()'s arguments (the library has no test hooks of its own):

  --kill_at=STEP:N   SIGKILL this process at commit STEP (job.COMMIT_STEPS) of the N-th shard this run
  --doubles          encode with the code-from-signal doubles (tests/encoder_doubles.py)

Every other flag, the summary lines and the exit status are the CLI's own.
"""

import importlib.util
import os
import signal
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
sys.path[:0] = [REPO, TESTS]

from absl import app, flags  # noqa: E402

import encoder_doubles  # noqa: E402
from mio_jax.tokenize import job  # noqa: E402

_spec = importlib.util.spec_from_file_location("tokenize_cli", os.path.join(REPO, "launch", "tokenize.py"))
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)

_KILL_AT = flags.DEFINE_string("kill_at", "", "STEP:N: SIGKILL at STEP of the N-th shard this run")
_DOUBLES = flags.DEFINE_bool("doubles", False, "encode with the code-from-signal doubles")


def kill_at(spec: str):
  step, _, n = spec.partition(":")
  if step not in job.COMMIT_STEPS:
    raise ValueError(f"--kill_at={spec}: step is not one of {job.COMMIT_STEPS}")

  def on_event(at: str, shard_number: int):
    if at == step and shard_number == int(n):
      os.kill(os.getpid(), signal.SIGKILL)
  return on_event


def main(argv):
  run = job.run

  def run_with_test_arguments(config):
    pair = encoder_doubles.use_double_encoders(config) if _DOUBLES.value else None
    return run(config, pair, on_event=kill_at(_KILL_AT.value) if _KILL_AT.value else None)

  job.run = run_with_test_arguments  # what the CLI's main calls
  cli.main(argv)


if __name__ == "__main__":
  app.run(main)
