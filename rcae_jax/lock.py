"""One writer per workdir: an exclusive OS file lock on `<workdir>/.lock`, held for as long
as a `train`, `evaluate` or `sweep` works there.

The lock is `fcntl.flock` on an open file: the OS releases it when the process ends, however
it ends (SIGKILL included), so a lock file left by a dead process never blocks. The file
holds the holder's host, PID, command and start time, for the error message of the next
writer. Re-entrant within a process (a sweep's `evaluate` after its `train`, the end of
`train` running evaluators). Multi-process runs lock on process 0, which writes the files.
"""
import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import socket
import sys

NAME = '.lock'
_held = {}  # resolved path -> [file object, depth]


class LockedError(RuntimeError):
  """The workdir is in use by another live process; the message names it."""


class WorkdirError(ValueError):
  """The workdir path cannot be a run's folder (it is a file); the message names it."""


def _holder(path):
  try:
    info = json.loads(path.read_text() or '{}')
  except (OSError, ValueError):
    info = {}
  if not info:
    return 'another process'
  return (f"{info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, "
          f"since {info.get('since', '?')})")


@contextlib.contextmanager
def hold(workdir, what, create=True):
  """Holds the workdir's lock for the block; LockedError at once if a live process has it.
  create=False: a workdir that does not exist is left so (nothing there to protect)."""
  workdir = pathlib.Path(workdir)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() != 0:  # process 0 writes the run's files; the others follow it
    yield
    return
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f'--workdir {workdir} is a file, not a folder')
  if not create and not workdir.exists():
    yield
    return
  workdir.mkdir(parents=True, exist_ok=True)
  path = (workdir / NAME).resolve()
  key = str(path)
  if key in _held:
    _held[key][1] += 1
    try:
      yield
    finally:
      _held[key][1] -= 1
    return
  f = open(path, 'a+')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise LockedError(f'{workdir} is in use by {_holder(path)}; wait for it to finish, or '
                      f'use another --workdir ({what} was not started)') from None
  info = {'host': socket.gethostname(), 'pid': os.getpid(), 'command': what,
          'argv': sys.argv, 'since': datetime.datetime.now().isoformat(timespec='seconds')}
  f.seek(0)
  f.truncate()
  f.write(json.dumps(info))
  f.flush()
  _held[key] = [f, 1]
  try:
    yield
  finally:
    _held[key][1] -= 1
    if not _held[key][1]:
      del _held[key]
      f.seek(0)
      f.truncate()  # the file stays (deleting it would race a waiting opener); empty = free
      f.close()
