"""What each process reads and writes, for multi-host checks: RCAE_TRACE=<dir> appends each
training-stream position a process reads to <dir>/process<i>.reads and each result file it
writes to <dir>/process<i>.writes. Unset, every call is a dictionary lookup."""
import os
import pathlib

_ENV = 'RCAE_TRACE'


def record(kind, text):
  folder = os.environ.get(_ENV)
  if not folder:
    return
  import jax  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(folder) / f'process{jax.process_index()}.{kind}'
  with open(path, 'a') as f:  # one short append per line: whole lines from reader threads
    f.write(f'{text}\n')
