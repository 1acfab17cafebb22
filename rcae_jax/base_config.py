"""The config schema: every key the platform knows, with the defaults a run gets.

It lives in the package, so a trained model loads without the `experiments/` tree.
Experiment configs build on it (`from rcae_jax import base_config`) and override; the command
line overrides last (`--set model.depth=3`). Config groups of methods registered from outside
the package (`rcae_jax.methods.register`) are added at the end. Unknown keys are refused.
"""
import ml_collections

from rcae_jax import methods


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0                     # model seed: initialisation and per-step randomness
  # rcae: the recursive AE, DPN and CRD in three stages. fae: the Filtering Autoencoder (one
  # U-Net restoring corrupted images in one stage; experiments/configs/fae.py sets it up).
  c.method = 'rcae'

  c.data = ml_collections.ConfigDict()
  c.data.name = 'builtin'        # builtin | mvtec | visa | mtd | folder
  c.data.root = ''               # dataset root (not needed for builtin)
  c.data.category = ''           # one category per run ('' = the only/first one)
  # (height, width) every image is resized to (an int or (s,) = a square); `data.resolution`
  # is its older name for a square, read into it (rcae_jax/sizes.py)
  c.data.size = (256, 256)
  c.data.resolution = None
  # stretch: to data.size whatever the image's aspect | keep: the aspect kept, centred, the
  # rest padded by reflection and ignored by scores, metrics and pictures (rcae_jax/sizes.py)
  c.data.resize = 'stretch'
  c.data.channels = 3            # 1 or 3: grayscale data is widened to 3, RGB kept
  c.data.val_fraction = 0.1      # normal train images held out for calibration
  c.data.train_fraction = 1.0    # ablation "10 % of the training data" = 0.1
  c.data.cache_dir = ''          # '' = ~/.cache/rcae_jax
  c.data.source = 'files'        # files: decode into memory (cached .npz) | prepared: the
                                 # array_record data `python -m rcae_jax prepare` wrote
  c.data.prepared_dir = ''       # '' = <cache_dir>/prepared
  c.data.read_threads = 4        # grain reader threads
  c.data.seed = 0                # held-out split, batch order and the depth schedule

  c.model = ml_collections.ConfigDict()
  c.model.features = 64          # C: channels of every RcAE level
  c.model.depth = 5              # N: recursion steps
  c.model.recursion = 'depth'    # depth (paper) | iterate (fixed-shape, lax.scan)
  c.model.iterate_levels = 2     # E/D steps inside one AE pass in iterate mode
  c.model.shared = True          # one E, one D for all levels (False = ablation)
  c.model.skips = True           # decoder takes the matching encoder skip
  c.model.skip_from = 1          # lowest level with a skip (1 = all; 2 = none at full res)
  c.model.groups = 8             # GroupNorm groups (0 = no normalisation)
  c.model.padding = 'zeros'      # zeros | reflect (image borders; see docs/design.md)
  c.model.dpn_features = 32
  c.model.crd_features = 16
  c.model.crd_steps = ()         # 1-based steps the CRD sees; () = all 1..N
  # CRD input: D_n ⊕ x (paper) plus |D_n - x|. Without it a short CRD barely learned (demo:
  # validation I/P-AUROC 53/59 -> 84/89 with it; docs/design.md). False = the paper's input.
  c.model.crd_diff = True
  # the input image itself (the paper's): False leaves D_n ⊕ |D_n - x|, so the CRD cannot
  # key on a training image's own appearance (issue 32's train/held-out gap; crossfit.md)
  c.model.crd_image = True
  # l2: the paper's |M_A - M_P|² + |∇M_A - ∇M_P|². bce: cross-entropy + crd_grad_weight x
  # gradient term; L2 on the sigmoid map collapsed to an all-zero map in our runs (docs/).
  c.model.crd_loss = 'bce'        # | focal (DRAEM's) | l2; from logits
  # bce weight of anomalous pixels; 0 = balanced per batch. 1 (unweighted) won on MTD
  # validation: 76.8 vs 74.0 mean of I-AUROC and AUPRO, two seeds (docs/results/mtd-detector.md)
  c.model.crd_pos_weight = 1.0
  c.model.crd_focal_gamma = 2.0
  c.model.crd_grad_weight = 0.1
  # small: the paper's 4-layer CRD (sees ~11 px) | unet: still 3x3x3 over the steps, halving
  # crd_levels times (0 = down to 8 px) with a dilated bottleneck: sees the whole image
  c.model.crd_arch = 'unet'
  c.model.crd_levels = 0
  c.model.crd_padding = 'reflect'  # '' = model.padding; reflect: no invented image edges
  c.model.dtype = 'float32'      # compute dtype: float32 | bfloat16 (both methods)
  c.model.remat = False          # RcAE E/D steps recomputed in the backward pass (memory)

  # FAE (method = 'fae'): its U-Net (groups and padding are model.groups and model.padding)
  # and its one training stage, with the keys of a restoring RcAE stage (below).
  c.fae = ml_collections.ConfigDict()
  c.fae.features = 32            # channels of the first level, doubling per level (max 8x)
  c.fae.levels = 4               # resolutions (3 halvings)
  c.fae.dilations = (1, 2, 4, 8)  # residual dilated 3x3 convs in the bottleneck
  c.fae.epochs, c.fae.steps, c.fae.lr = 1500, 0, 1e-4
  c.fae.restore, c.fae.noise, c.fae.region_weight = True, 0.04, 1.0
  c.fae.schedule, c.fae.flip, c.fae.jitter, c.fae.weight_decay = 'constant', '', 0.0, 0.0
  c.fae.crop = ()
  c.fae.crop_sampling = 'uniform'

  # Which of the method's stages make up the model, by position: RcAE (1,) = RcAE alone,
  # (1, 2) = +DPN, (1, 2, 3) = full; FAE (1,).
  c.stages = (1, 2, 3)
  # uniform: n ~ U{1..N} per batch (paper); max: always N (non-recursive ConvAE baseline).
  c.depth_sampling = 'uniform'

  c.batch_size = 16
  # Stages 1-2 learn to restore (docs/design.md, "Suppression"): the input carries a
  # pseudo-anomaly (`anomaly.*`), the target is the clean image; region_weight > 0 is FAE's
  # two-term loss (the corrupted region's mean error x region_weight + the rest's mean
  # error); noise is FAE's identity anchor, N(0, s²), s ~ U[0, noise] per image, added alike
  # to input and target. The paper's plain reconstruction of clean images (an identity map
  # in practice: 96 % of a planted defect survived) is restore=False (`paper.py`).
  # schedule: constant (the paper's Adam) | cosine (decayed to 0 over the stage's steps)
  # flip: '' | h | v | hv, random left-right / top-bottom flips of the training images
  # (rcae_jax/augment.py; only where the product is symmetric)
  # jitter: each training image's grey level times exp(U[-jitter, jitter]), clipped (0 = off)
  # weight_decay: AdamW's decoupled decay of the stage's weights (0 = Adam, the paper's)
  # crop: train on random (h, w) (or s x s) crops of the data.size images, the position drawn
  # from the stream position like the flips; validation and test see whole images (() = off)
  # crop_sampling: uniform (every crop position equally likely: a crop meets the image's own
  # border rarely) | cover (every pixel, border ones too, inside a crop equally often;
  # rcae_jax/augment.py)
  c.stage1 = ml_collections.ConfigDict(dict(epochs=1500, steps=0, lr=1e-4, restore=True,
                                            noise=0.04, region_weight=1.0,
                                            schedule='constant', flip='', jitter=0.0,
                                            weight_decay=0.0, crop=(),
                                            crop_sampling='uniform'))
  c.stage2 = ml_collections.ConfigDict(dict(epochs=400, steps=0, lr=1e-4, restore=True,
                                            noise=0.04, region_weight=1.0,
                                            schedule='constant', flip='', jitter=0.0,
                                            weight_decay=0.0, crop=(),
                                            crop_sampling='uniform'))
  # recon_noise: the CRD's input reconstructions D_n in training + N(0, s²), s ~ U[0, it]
  # per image, so it cannot rely on reconstructions as good as its training images' (the
  # leak between stages, issue 32; rcae_jax/augment.py); 0 = off (not chosen on MTD)
  c.stage3 = ml_collections.ConfigDict(dict(epochs=300, steps=0, lr=1e-4, schedule='constant',
                                            flip='', jitter=0.0, weight_decay=0.0, crop=(),
                                            crop_sampling='uniform', recon_noise=0.0))
  c.grad_weight = 1.0            # weight of the gradient term in every loss
  # Cross-fitting (rcae_jax/crossfit.py): folds = K >= 2 trains the stages a later stage reads
  # (RcAE's 1-2) once more per fold on the other folds' images, and the last stage (the CRD)
  # only on outputs for images their model never saw; 0 = off. infer: at test time the
  # stages 1-2 trained on every image ('full') or the K fold models, maps averaged ('folds').
  c.crossfit = ml_collections.ConfigDict(dict(folds=0, infer='full'))

  # Pseudo-anomalies (rcae_jax/anomalies.py): `anomaly` for the restoring stages 1-2,
  # `crd_anomaly` for the CRD (stage 3).
  c.anomaly = ml_collections.ConfigDict()
  c.anomaly.p_clean = 0.2        # fraction of images left normal
  c.anomaly.shapes = ('patch', 'blob', 'line', 'curve')
  c.anomaly.fillers = ('color', 'copy', 'other', 'texture', 'noise')
  c.anomaly.min_opacity = 0.5
  c.anomaly.max_size = 0.3       # largest shape extent as a fraction of the side
  c.anomaly.edge = 0.0           # probability a shape is moved onto an image border
  c.anomaly.visible = 0.0        # > 0: label a pixel by its visible change / visible (cap 1)
  c.anomaly.procedural = 0       # procedural textures added to the 16 real ones
  c.anomaly.batching = 'auto'    # map: one example at a time, only its drawn shape/filler is
                                 # computed (memory at 1024²) | vmap: every branch for every
                                 # example (faster when small, on a GPU) | auto: map on
                                 # a CPU, elsewhere from 512² up
  c.crd_anomaly = ml_collections.ConfigDict(dict(
      p_clean=0.2, shapes=('patch', 'blob', 'line', 'curve', 'perlin', 'crack', 'fae'),
      fillers=('color', 'copy', 'other', 'texture', 'noise', 'intensity'), min_opacity=0.3,
      max_size=0.3, edge=0.3, visible=0.08, procedural=16,
      holdout=()))               # shapes/fillers the CRD never sees (`generalisation`)

  c.score = ml_collections.ConfigDict()
  c.score.sigma = 4.0            # Gaussian smoothing, pixels at 256² (scaled with resolution)
  c.score.image = 'max'          # max | topk | sum (mean over the map)
  c.score.topk = 100
  # Maps of reconstruction-scored detectors (+RcAE, +DPN, FAE): l1grad (intensity + gradient
  # error, the paper's) | mse | ssim | gms, or several joined by + (rcae_jax/discrepancy.py).
  c.score.discrepancy = 'l1grad'
  c.score.smoothing = 'gaussian'  # gaussian (sigma) | mean (FAE: repeated box filter)
  c.score.mean_size = 8          # box side in pixels at 256² (scaled; made odd)
  c.score.mean_repeats = 3
  c.score.source = 'auto'        # auto (crd if trained, else dpn, else rcae) | crd | dpn | rcae
  c.score.threshold_quantile = 0.99  # of held-out normal scores -> decision threshold

  # Inference on whole images at data.size (tile = ()), or on (h, w) tiles overlapping by
  # `overlap` pixels, the raw maps blended with weights falling to the tile edges: memory of
  # one tile batch at any image size (rcae_jax/inference.py)
  # flips: '' | h | v | hv, the raw map averaged over the image and its left-right /
  # top-bottom / (hv) all three flips, each flipped back (test-time augmentation: 2x or 4x
  # the inference cost)
  c.infer = ml_collections.ConfigDict(dict(tile=(), overlap=32, flips=''))

  c.log_every = 50
  c.log = ml_collections.ConfigDict()
  c.log.tensorboard = False      # TensorBoard event files beside stageK/metrics.jsonl
  c.ckpt_every = 500
  c.eval_batch_size = 16
  # pixel metrics from histograms with 2^bits bins, filled batch by batch: memory does not grow
  # with the test set; the error bound is reported beside them ('bounds'). 0 = exact (every
  # pixel score held in memory).
  c.eval_pixel_bits = 20
  for group, defaults in methods.defaults().items():
    if group not in c:
      c[group] = ml_collections.ConfigDict(defaults)
  c.lock()  # a config file setting a key the schema lacks (a typo) fails at that line
  return c
