"""Command line: python -m rcae_jax {prepare,train,evaluate,predict,export,demo,bench,sweep,dynamics} ..."""
import argparse
import os
import pathlib
import sys

def _data_overrides(args):
  from rcae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.data_overrides(getattr(args, 'data', None), getattr(args, 'category', None))


def _add_data(p):
  p.add_argument('--data', help='dataset as NAME[:ROOT]: builtin, mvtec:/path, visa:/path, '
                 'mtd:/path, folder:/path')
  p.add_argument('--category', help='category of the dataset (default: the first)')


def _parser():
  ap = argparse.ArgumentParser(prog='python -m rcae_jax', description=__doc__)
  sub = ap.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('train', help='train stages 1-3 (resumes if interrupted)')
  p.add_argument('--config', default='base',
                 help='a shipped config by name (tiny, mtd:cpu, ...) or path/to/config.py[:arg]')
  p.add_argument('--workdir', required=True)
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  p.add_argument('--distributed', action='store_true', help='call jax.distributed.initialize() '
                 '(pods and SLURM set it up from the environment)')
  p.add_argument('--coordinator', default=None, metavar='HOST:PORT',
                 help='multi-process without a cluster: process 0\'s address (e.g. '
                      '127.0.0.1:29500), with --num-processes and --process-id')
  p.add_argument('--num-processes', type=int, default=None)
  p.add_argument('--process-id', type=int, default=None)
  _add_data(p)
  p = sub.add_parser('prepare', help='write a category as TFDS array_record at the config\'s '
                     'data.size (then train/evaluate with --set data.source=prepared)')
  p.add_argument('--config', default='base')
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  _add_data(p)
  p = sub.add_parser('evaluate', help="score a run's test set")
  p.add_argument('--workdir', required=True)
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                 help='scoring, inference and data-location keys only (score.*, infer.*, '
                      'data.root, ...): e.g. infer.tile=256 infer.overlap=32')
  p.add_argument('--validation-only', action='store_true',
                 help='score only the validation set (held-out normals + planted '
                      'pseudo-anomalies) under --set, never loading the test set: choose '
                      'tiles or a score there before reading the test')
  _add_data(p)
  p = sub.add_parser('predict', help='anomaly maps + decisions for images or folders')
  p.add_argument('--workdir', required=True)
  p.add_argument('inputs', nargs='+')
  p.add_argument('--out', default=None)
  p = sub.add_parser('export', help='a finished run as StableHLO (+ ONNX) with a loader that '
                     'needs only jax and numpy')
  p.add_argument('--workdir', required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--onnx-batch', type=int, nargs='*', default=[1],
                 help='batch sizes of the ONNX files (ONNX batches are fixed; none: no ONNX)')
  p = sub.add_parser('demo', help='built-in textures: data, train, evaluate (minutes on CPU)')
  p.add_argument('--workdir', default='runs/demo')
  p.add_argument('--category', default='brick')
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  p = sub.add_parser('bench', help='jitted step timings, FLOPs and memory -> JSON')
  p.add_argument('--config', default='tiny')
  p.add_argument('--what', default=None,
                 help='comma list of train1,train2,train3,infer,input (default: the '
                      "method's train steps and infer)")
  p.add_argument('--size', '--resolution', nargs='*', default=None, metavar='S|HxW',
                 help='image sizes to time (default: the config\'s data.size): 256 or 128x256')
  p.add_argument('--batch', type=int, default=None)
  p.add_argument('--dtype', nargs='*', choices=('float32', 'bfloat16'), default=None,
                 help='compute dtype(s) to time (default: the config\'s)')
  p.add_argument('--recursion', nargs='*', default=None, help='depth and/or iterate')
  p.add_argument('--devices', nargs='*', type=int, default=None,
                 help='device counts to time (default: 1 and all)')
  p.add_argument('--iters', type=int, default=10)
  p.add_argument('--compile-only', action='store_true',
                 help='compile and report XLA\'s memory accounting and FLOPs, run nothing '
                      '(programs too large or slow to run on this machine)')
  p.add_argument('--peak-tflops', type=float, default=None, help='override the peak table')
  p.add_argument('--peak-matmul', type=int, default=2048,
                 help='CPU: n of the n×n matmuls that measure this machine\'s peak in the same '
                      'run (0: skip)')
  p.add_argument('--peak-copy-mib', type=int, default=256,
                 help='CPU: MiB copied to measure the memory bandwidth')
  p.add_argument('--profile', type=int, default=0, metavar='N',
                 help='also trace each timed program with jax.profiler and report its N '
                      'costliest operations and layers, each tied to the model code (0: off)')
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  p.add_argument('--out', required=True)
  p = sub.add_parser('sweep', help='run a preset of ablation variants and tabulate them')
  p.add_argument('preset', help='name in experiments/sweeps/ or a path')
  p.add_argument('--workdir', required=True)
  p.add_argument('--categories', default=None, help="comma list or 'all' (default: first)")
  p.add_argument('--config', default=None, help="base config replacing the preset's")
  p.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE')
  p.add_argument('--seeds', type=int, nargs='*', default=None,
                 help='model seeds per variant (tables: mean ± std over seeds)')
  p.add_argument('--validation-only', action='store_true',
                 help='train and validate each variant, never read the test set (model '
                      'selection); a later run without the flag evaluates the chosen ones')
  _add_data(p)
  p = sub.add_parser('dynamics', help='how reconstructions evolve over recursion steps')
  p.add_argument('--workdir', required=True)
  p.add_argument('--max-images', type=int, default=64)
  _add_data(p)
  return ap


def main(argv=None):
  args = _parser().parse_args(argv)
  if args.cmd != 'bench':  # bench measures compilation: never from a cache
    from rcae_jax import compile_cache  # pylint: disable=g-import-not-at-top
    compile_cache.enable()
  # Imports after parsing: --help stays instant and errors come before JAX starts.
  from rcae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from rcae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from rcae_jax import checkpoints, files, lock, stops  # pylint: disable=g-import-not-at-top
  try:
    return _run(args)
  except (config_lib.ConfigError, data_lib.DataError, checkpoints.BundleError,
          files.CorruptFileError, lock.LockedError, lock.WorkdirError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except stops.Stopped as e:  # a signal during training: saved, then stopped
    print(str(e), flush=True)
    return e.exit_code
  except KeyboardInterrupt:  # Ctrl-C outside a training step (loading, compiling, evaluating)
    print('\ninterrupted: nothing of this command was lost that its last checkpoint holds; '
          'the same command resumes', file=sys.stderr, flush=True)
    return 130


def _run(args):
  from rcae_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  if args.cmd == 'train':
    from rcae_jax import api, parallel  # pylint: disable=g-import-not-at-top
    if args.coordinator and (args.num_processes is None or args.process_id is None):
      raise config_lib.ConfigError('--coordinator needs --num-processes and --process-id')
    parallel.maybe_initialize_distributed(args.distributed, args.coordinator,
                                          args.num_processes, args.process_id)
    done = api.train(args.config, workdir=args.workdir,
                     overrides=_data_overrides(args) + args.set)
    print(f'done: model bundle in {args.workdir}/model' if done is not None else 'stopped')
  elif args.cmd == 'prepare':
    from rcae_jax import data as data_lib  # pylint: disable=g-import-not-at-top
    config = config_lib.load_config(args.config, _data_overrides(args) + args.set)
    path = data_lib.prepare(config)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    print(f'prepared {path} ({size / 2 ** 20:.1f} MiB); train from it with '
          '--set data.source=prepared')
  elif args.cmd == 'evaluate':
    from rcae_jax import api  # pylint: disable=g-import-not-at-top
    overrides = _data_overrides(args) + args.set
    if args.validation_only:
      m = api.validate(args.workdir, overrides=overrides)['metrics']
      where = (f'{args.workdir}/{api.eval_name(overrides)}/validation.json' if overrides else
               f'{args.workdir}/validation.json (written by train; --set scores it another way)')
      print('validation: ' + ', '.join(f'{k} {v:.1f}' for k, v in m.items()
                                        if isinstance(v, float)) + f'\nin {where}')
      return 0
    api.evaluate(args.workdir, overrides=overrides)
    out = pathlib.Path(args.workdir) / api.eval_name(overrides)
    print((out / 'metrics.md').read_text())
    print(f'wrote {out}/ (metrics.json, metrics.md, scores.csv, heatmaps.png, sequence_*.png)')
  elif args.cmd == 'predict':
    from rcae_jax import predict  # pylint: disable=g-import-not-at-top
    predict.predict(args.workdir, args.inputs, args.out)
  elif args.cmd == 'export':
    from rcae_jax import exporting  # pylint: disable=g-import-not-at-top
    meta = exporting.export(args.workdir, args.out, tuple(args.onnx_batch))
    onnx = '; '.join(f'ONNX batch {n}: ' + (r.get('file') or r['error'])
                     for n, r in meta['onnx'].items())
    print(f'exported {args.workdir} to {args.out} (detector.stablehlo, params.npz, '
          f'rcae_detector.py{"; " + onnx if onnx else ""}); check it with python '
          f'{args.out}/rcae_detector.py {args.out}')
  elif args.cmd == 'demo':
    from rcae_jax import demo  # pylint: disable=g-import-not-at-top
    demo.run(args.workdir, args.category, args.set)
  elif args.cmd == 'bench':
    from rcae_jax import bench  # pylint: disable=g-import-not-at-top
    bench.main(args)
  elif args.cmd == 'sweep':
    from rcae_jax import sweep  # pylint: disable=g-import-not-at-top
    sweep.run(args.preset, args.workdir, _data_overrides(args) + args.set, args.categories,
              args.config, validation_only=args.validation_only, seeds=args.seeds)
  elif args.cmd == 'dynamics':
    from rcae_jax import evaluators  # pylint: disable=g-import-not-at-top
    ctx = evaluators.Context.of_run(args.workdir, _data_overrides(args),
                                    max_images=args.max_images)
    evaluators.run(evaluators.DYNAMICS, ctx)
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.exit(main())
