"""Pictures a person would rather see than read: heatmaps, recursion strips, curves."""
import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from PIL import Image, ImageDraw

from rcae_jax import files


def _show(ax, img, title=None, **kw):
  img = np.asarray(img)
  if img.ndim == 3 and img.shape[-1] == 1:
    img = img[..., 0]
    kw.setdefault('cmap', 'gray')
  ax.imshow(img, **kw)
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=7)


def _save(fig, path):
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110, bbox_inches='tight')
  plt.close(fig)
  files.atomic_write(path, buf.getvalue())
  return path


def overlay(image, amap, vmax):
  """The anomaly map in 'jet' blended half and half over the image: uint8 (H, W, 3)."""
  image = np.asarray(image)
  rgb = image if image.shape[-1] == 3 else np.repeat(image, 3, axis=-1)
  heat = matplotlib.colormaps['jet'](np.clip(np.asarray(amap) / max(vmax, 1e-12), 0, 1))
  return ((0.5 * rgb / 255.0 + 0.5 * heat[..., :3]) * 255).astype(np.uint8)


def _with_scale(rgb, vmax, threshold):
  """rgb with a vertical 'jet' colour scale on its right: 0 at the bottom, vmax at the top
  (labelled 'threshold' when it is the decision threshold)."""
  h, w = rgb.shape[:2]
  bar_h, bar_w, margin = max(h, 48), max(8, w // 24), 64
  canvas = np.full((bar_h, w + bar_w + margin, 3), 255, np.uint8)
  canvas[:h, :w] = rgb
  ramp = matplotlib.colormaps['jet'](np.linspace(1, 0, bar_h))[:, :3]
  canvas[:, w + 4:w + 4 + bar_w] = (ramp[:, None] * 255).astype(np.uint8)
  im = Image.fromarray(canvas)
  draw = ImageDraw.Draw(im)
  top = f'{vmax:.3g}' + (' threshold' if threshold is not None and vmax == threshold else '')
  x = w + 8 + bar_w
  draw.text((x, 0), top, fill=(0, 0, 0))
  draw.text((x, bar_h - 12), '0', fill=(0, 0, 0))
  return np.asarray(im)


def overlay_png(image, amap, vmax, scale=None):
  """`overlay` as PNG bytes (predict's per-image maps); scale=(vmax, threshold) adds the
  colour scale."""
  rgb = overlay(image, amap, vmax)
  if scale is not None:
    rgb = _with_scale(rgb, *scale)
  buf = io.BytesIO()
  Image.fromarray(rgb).save(buf, format='PNG')
  return buf.getvalue()


def heatmaps(path, images, masks, maps, scores, titles, vmax=None, labels=None):
  """One row per image: input | ground truth | anomaly map overlaid on the input. A defective
  image (labels) whose mask lost every pixel in the resize says so instead of looking normal."""
  n = len(images)
  fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
  vmax = vmax if vmax is not None else float(np.max(maps)) or 1.0
  for i in range(n):
    _show(axes[i, 0], images[i], titles[i])
    empty = labels is not None and labels[i] and not np.any(masks[i])
    gt = f'ground truth: empty at {masks[i].shape[0]}²' if empty else 'ground truth'
    _show(axes[i, 1], masks[i], gt, cmap='gray', vmin=0, vmax=1)
    _show(axes[i, 2], overlay(images[i], maps[i], vmax), f'map, score {scores[i]:.3g}')
  return _save(fig, path)


def sequence_strip(path, image, recon, enhanced=None, title=''):
  """x | R_1 ... R_N (and D_1 ... D_N below)."""
  rows = [recon] + ([enhanced] if enhanced is not None else [])
  n = recon.shape[0]
  fig, axes = plt.subplots(len(rows), n + 1, figsize=(1.6 * (n + 1), 1.7 * len(rows)),
                           squeeze=False)
  for r, (seq, name) in enumerate(zip(rows, ('R', 'D'))):
    _show(axes[r, 0], image, title if r == 0 else 'input')
    for k in range(n):
      _show(axes[r, k + 1], np.clip(seq[k], 0, 1), f'{name}_{k + 1}')
  return _save(fig, path)


def _lines(ax, xs, series, xlabel, title=''):
  for label, ys in series.items():
    ax.plot(xs, ys, marker='o', ms=3, label=label)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  ax.grid(alpha=0.3)


def curves(path, xs, series, xlabel, ylabel, title=''):
  """series: {label: ys}; lines over the same xs."""
  fig, ax = plt.subplots(figsize=(4.5, 3.2))
  _lines(ax, xs, series, xlabel, title)
  ax.set_ylabel(ylabel)
  return _save(fig, path)


def curve_panels(path, xs, panels, xlabel):
  """panels: {title: {label: ys}}; one `curves` panel each, side by side."""
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
  for ax, (title, series) in zip(axes[0], panels.items()):
    _lines(ax, xs, series, xlabel, title)
  fig.tight_layout()
  return _save(fig, path)


def training_curves(path, records, title=''):
  """A stage's metrics.jsonl records -> loss terms and learning rate over steps, one panel
  each (log-scaled losses when they span a decade)."""
  records = [r for r in records if 'step' in r]
  if not records:
    return None
  steps = [r['step'] for r in records]
  keys = [k for k in records[-1] if k not in ('step', 'images_per_s', 'fold')]
  fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 2.8), squeeze=False)
  for ax, key in zip(axes[0], keys):
    ys = [float(np.mean(r[key])) if key in r else np.nan for r in records]
    ax.plot(steps, ys, lw=1)
    finite = [y for y in ys if np.isfinite(y) and y > 0]
    if key != 'lr' and finite and max(finite) > 10 * min(finite):
      ax.set_yscale('log')
    ax.set_title(f'{title}: {key}' if title else key, fontsize=9)
    ax.set_xlabel('step', fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return _save(fig, path)


def bars(path, labels, values, ylabel, title=''):
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(labels)), 3.2))
  ax.bar(range(len(labels)), values, color='tab:blue')
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels(labels, rotation=30, ha='right', fontsize=7)
  ax.set_ylabel(ylabel)
  lo = min([v for v in values if np.isfinite(v)] or [0])
  ax.set_ylim(max(0, lo - 10), 100)
  for i, v in enumerate(values):
    ax.text(i, v, f'{v:.1f}', ha='center', va='bottom', fontsize=7)
  ax.set_title(title, fontsize=9)
  return _save(fig, path)
