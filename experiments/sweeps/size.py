"""Image size against stage-3 length at one compute budget (`mtd.py:cpu`, issue 33).

At 64² a quarter of MTD's crack masks lose every pixel and local contrast separates a crack
from normal texture 78 % of the time; at 80² 88 % of the masks survive and 88 %, at 96² 98 %
and 91 % (docs/results/visibility.md, no model). A step's cost grows with the pixels, so
the rows hold stage 3's pixel-steps near today's 64² × 14400: 80² (1.56× the pixels) for
9600 steps, 96² (2.25×) for 6400. Stages 1-2 keep their step counts (so they cost 1.56× and
2.25× theirs). Images are stretched to the size, as today. Measured on the 2-core Xeon, a
stage-3 step costs 1.52× and 2.19× the 64² one: 61 / 62 / 59 min of stage 3 for the three rows.
Run so far (stop 56, two seeds): 80² × 9600 validates 88.5 against 93.0 and tests 86.2 / 80.0 /
63.1 against 89.0 / 80.7 / 71.5, cracks included (docs/results/visibility.md); 96² not run.
"""


def get_sweep():
  return {
      'title': 'Image size at equal stage-3 compute: 64² × 14400, 80² × 9600, 96² × 6400',
      'config': 'mtd.py:cpu',
      'variants': [
          ('64², stage 3 14400 steps (default)', ['data.size=64', 'stage3.steps=14400']),
          ('80², stage 3 9600 steps', ['data.size=80', 'stage3.steps=9600']),
          ('96², stage 3 6400 steps', ['data.size=96', 'stage3.steps=6400']),
      ],
  }
