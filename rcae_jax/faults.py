"""Kill points for preemption tests: RCAE_KILL_AT=<point>[#k] makes the process SIGKILL itself
the k-th time (default 1st) it reaches <point>, exactly as a lost machine would stop it.

Points: 'stage<s>:step<i>' (after step i's update, before any save), 'stage<s>:saving<i>'
(step i's asynchronous Orbax save in flight), 'after-stage<s>', 'bundle' (model params
written, its config.json not yet), 'write:<file name>' (a result file's temporary copy
written, not yet renamed into place). Unset, every call is a dictionary lookup.
"""
import collections
import os
import signal

_ENV = 'RCAE_KILL_AT'
_seen = collections.Counter()


def point(name):
  spec = os.environ.get(_ENV)
  if not spec:
    return
  target, _, k = spec.partition('#')
  if name != target:
    return
  _seen[name] += 1
  if _seen[name] == int(k or 1):
    os.kill(os.getpid(), signal.SIGKILL)
