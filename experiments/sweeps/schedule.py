"""Training schedule and length of stage 3 at the CPU budget (`mtd.py:cpu`, stages 1-2 at
2000/600 steps, Adam 1e-3): 800 steps at a constant learning rate (the paper's schedule, the
default until this sweep), 800 steps with a cosine decay to zero, three times as many (2400,
cosine) and six times as many (4800, cosine: chosen on validation then), and twelve times as
many (9600, cosine: chosen on validation at stop 51; docs/results/schedule.md), and 18
times as many (14400, cosine: chosen on validation at stop 54, now `mtd.py:cpu`'s default; a
whole run ~1.4x 9600's, inside issue 33's 1.5x budget), and 24 times as many (19200,
cosine: the next point of the same curve; not yet measured, docs/results/schedule.md says why).
Every row shares stages 1-2. The rows name their schedule and length.

Its numbers in docs/results/ were measured with the rows as they were at commit f253e4e
(`git checkout f253e4e` reruns exactly that); today the rows vary only their axis on
today's `mtd.py:cpu`, and each run's env.json names the commit that trained it.
(Then: stages 1-2 restoring pasted shapes, zero padding.)
"""


def _stage3(schedule, steps):
  return [f'stage3.schedule={schedule}', f'stage3.steps={steps}']


def get_sweep():
  return {
      'title': 'Training schedule: constant vs cosine learning rate, stage-3 length',
      'config': 'mtd.py:cpu',
      'variants': [
          ('constant, 800 steps (paper)', _stage3('constant', 800)),
          ('cosine, 800 steps', _stage3('cosine', 800)),
          ('cosine, 2400 steps', _stage3('cosine', 2400)),
          ('cosine, 4800 steps (chosen before; the 128² default)', _stage3('cosine', 4800)),
          ('cosine, 9600 steps (chosen at stop 51)', _stage3('cosine', 9600)),
          ('cosine, 14400 steps (chosen, default)', _stage3('cosine', 14400)),
          ('cosine, 19200 steps', _stage3('cosine', 19200)),
      ],
  }
