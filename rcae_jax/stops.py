"""Clean stops: SIGINT (Ctrl-C) and SIGTERM (a scheduler's preemption notice) during a
training stage finish the current step, write a checkpoint and stop with `Stopped`, which
the command line turns into one line and exit status 128 + signal (130, 143). A second
signal stops at once, losing the steps since the last checkpoint.

With several processes every process must stop at the same step (the next one waits on
collectives otherwise): the request is all-gathered each step, and one process's signal
stops them all.
"""
import contextlib
import os
import signal
import sys
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
  """Training stopped on a signal after saving; `exit_code` is 128 + the signal number."""

  def __init__(self, message, signum):
    super().__init__(message)
    self.exit_code = 128 + signum


class _Request:
  def __init__(self):
    self.signum = None

  def requested(self):
    """Whether to stop after this step (agreed by every process)."""
    mine = 0 if self.signum is None else self.signum
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      every = np.asarray(multihost_utils.process_allgather(np.int32(mine)))
      mine = int(every.max())
      if self.signum is None and mine:
        self.signum = mine
    return bool(mine)


@contextlib.contextmanager
def on_signal():
  """Within the block, SIGINT/SIGTERM set a request (`.requested()`) instead of raising; a
  second one exits at once. Outside the main thread signals cannot be caught: the block
  then never requests a stop."""
  request = _Request()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return

  def handle(signum, frame):
    del frame
    if request.signum is not None:
      print(f'\nsecond {signal.Signals(signum).name}: stopping now, without a checkpoint of '
            'the steps since the last one', file=sys.stderr, flush=True)
      os._exit(128 + signum)  # pylint: disable=protected-access
    request.signum = signum
    print(f'\n{signal.Signals(signum).name}: finishing this step and saving a checkpoint '
          '(again to stop at once)', file=sys.stderr, flush=True)

  previous = {s: signal.signal(s, handle) for s in SIGNALS}
  try:
    yield request
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
