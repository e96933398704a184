"""``python -m experiments``: run configs, list what exists, rebuild reports."""

from __future__ import annotations

import argparse
import pathlib
import sys

DESCRIPTION = """\
Config-driven experiments with gumbax estimators.

  python -m experiments run configs/quickstart.yaml [key=value ...] [--out DIR]
      Validate the YAML config (and the dotted key=value overrides, e.g.
      train.steps=200 sweep.seeds=[0,1] estimator=rloo), then train every sweep
      member (tasks x estimators x temperatures x learning rates x seeds) into the
      run folder (default runs/NAME). Running again on the same folder resumes from
      the last checkpoint and skips finished members. `run RUN_DIR` resumes a run.
      Writes: config.yaml, members/*/metrics.jsonl, members/*/summary.json,
      table.md, table.csv and plots/*.png.

  python -m experiments variance configs/variance_toy.yaml [key=value ...] [--out DIR]
      Gradient-variance study: train one reference run (variance.train_estimator)
      and, at each of variance.checkpoints, measure every estimator of
      sweep.estimators on one fixed batch: variance (total and per parameter
      group), bias / MSE against a reference gradient (exact, or an unbiased
      estimator with many samples), SNR, cosine and ms per gradient. Writes
      variance.jsonl, table_stepN.md/.csv, plots/variance.png and summary.json
      (default folder runs/NAME).

  python -m experiments evaluate RUN_DIR [RUN_DIR ...] --samples M [--splits test ...]
      Evaluate the completed members of a run again from their final checkpoints
      with M importance samples per example (e.g. the m = 1000 bound of a run
      trained with task.final_eval_samples=100), on every split or the ones named.
      Updates each member's summary.json final metrics and their m, appends the
      new rows to metrics.jsonl (the earlier ones stay), then rebuilds the report.

  python -m experiments layer-variance MEMBER_DIR [--estimators E ...] [--keys N] [--json FILE]
      Per-layer gradient variance at the newest checkpoint of one member of a
      structured_output run: each estimator (a registry name, name:key=value, or
      `trained`, the member's own estimator and control variate) draws N gradients
      on one batch of validation images; prints one table (--json also writes it).

  python -m experiments list
      The configs in configs/, the tasks, the estimators and the schedules.

  python -m experiments report RUN_DIR [RUN_DIR ...] [--out DIR] [--select METRIC]
      Rebuild the comparison table and the plots from finished (or running) runs.
      --select valid/neg_elbo also writes selected.md/.csv: per estimator only the
      learning rate (and decay) with the lowest mean of that final metric.

Data: MNIST is read from $GUMBAX_DATA_DIR (default ~/.cache/gumbax/mnist) and
downloaded from public mirrors when missing (data.download: false to forbid).

Exit status: 0 done; 1 every member stopped on a non-finite loss (the run folder
keeps their metrics); 2 a user error (arguments, config, overrides, missing or
corrupt data, an unwritable folder), said in one `error:` line; 3 a process of a
distributed run failed (e.g. a peer died).
Several processes or hosts (run and variance): start the same command in every
process with --coordinator-address HOST:PORT (process 0's) --num-processes N
--process-id I, or with --distributed where JAX detects the cluster (SLURM, Open
MPI, Kubernetes, TPU pods). The batch is sharded over every device of every
process, the parameters are replicated; process 0 writes the run folder.
"""


_SELECT_HELP = ("also write selected.md/.csv: per estimator, the learning rate and decay "
                "with the lowest mean of this final metric (e.g. valid/neg_elbo)")


def _metric_name(text: str) -> str:
  """``--select`` values: a final metric's name, ``split/name`` (``valid/neg_elbo``)."""
  split, _, name = text.partition("/")
  if not split or not name:
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a final metric name, split/name like valid/neg_elbo")
  return text


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
  return value


def _add_distributed(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "several processes", "start the same command in every process (see docs/experiments.md, "
      "Scaling out); process 0 writes the output folder")
  group.add_argument("--coordinator-address", metavar="HOST:PORT",
                     help="process 0's address and a free port, the same in every process")
  group.add_argument("--num-processes", type=_positive_int, metavar="N", help="number of processes")
  group.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")
  group.add_argument("--distributed", action="store_true",
                     help="let JAX detect the three values (SLURM, Open MPI, Kubernetes, TPU pods)")
  group.add_argument("--peer-timeout", type=_positive_int, default=100, metavar="SECONDS",
                     help="seconds without a heartbeat after which a dead peer stops every "
                     "process with an error (default 100)")


def _start_distributed(args) -> None:
  """Joins the distributed run the flags describe (nothing without them)."""
  flags = (args.coordinator_address, args.num_processes, args.process_id)
  if not args.distributed and all(v is None for v in flags):
    return
  from experiments import config as cfg_lib
  from experiments import distributed
  try:
    distributed.initialize(*flags, detect=args.distributed, heartbeat_timeout=args.peer_timeout)
  except ValueError as err:
    raise cfg_lib.ConfigError(str(err)) from None


def _configs_dir() -> pathlib.Path:
  here = pathlib.Path.cwd() / "configs"
  return here if here.is_dir() else pathlib.Path(__file__).resolve().parent.parent / "configs"


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m experiments", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True, metavar="{run,variance,evaluate,layer-variance,list,report}")
  run = sub.add_parser("run", help="train every member of a config (resumes an existing run)",
                       description="Train every sweep member of CONFIG; see `python -m experiments -h`.")
  run.add_argument("config", help="a YAML config, or an existing run folder to resume")
  run.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides, values parsed as YAML (train.steps=100)")
  run.add_argument("--out", help="run folder (default: runs/NAME)")
  run.add_argument("--no-progress", action="store_true", help="no progress bar")
  run.add_argument("--no-report", action="store_true", help="skip the table and plots at the end")
  run.add_argument("--select", metavar="METRIC", type=_metric_name, help=_SELECT_HELP)
  _add_distributed(run)
  variance = sub.add_parser("variance", help="gradient bias / variance study of a config's estimators")
  variance.add_argument("config", help="a YAML config with a variance: section")
  variance.add_argument("overrides", nargs="*", metavar="key=value")
  variance.add_argument("--out", help="output folder (default: runs/NAME)")
  variance.add_argument("--no-progress", action="store_true", help="no progress bar")
  _add_distributed(variance)
  evaluate = sub.add_parser("evaluate", help="evaluate finished members again (e.g. larger m)",
                            description="Evaluate the completed members of RUN_DIR from their "
                            "final checkpoints; see `python -m experiments -h`.")
  evaluate.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  evaluate.add_argument("--samples", type=_positive_int, required=True, metavar="M",
                        help="importance samples per example (e.g. 1000)")
  evaluate.add_argument("--splits", nargs="+", metavar="SPLIT",
                        help="the splits to evaluate (default: all of the task's, e.g. valid test)")
  evaluate.add_argument("--no-report", action="store_true", help="skip rebuilding the table and plots")
  layers = sub.add_parser("layer-variance", help="per-layer gradient variance at an SBN checkpoint",
                          description="Per-layer gradient variance of estimators at the newest "
                          "checkpoint of a structured_output member; see `python -m experiments -h`.")
  layers.add_argument("member", type=pathlib.Path, help="a member folder with checkpoints")
  layers.add_argument("--estimators", nargs="+", default=["muprop", "reinforce", "straight_through"],
                      help="registry names, name:key=value,..., or `trained`")
  layers.add_argument("--keys", type=_positive_int, default=512, help="gradients per estimator (>= 2)")
  layers.add_argument("--json", type=pathlib.Path, help="also write the numbers to this file")
  sub.add_parser("list", help="configs, tasks, estimators and schedules")
  report = sub.add_parser("report", help="rebuild tables and plots from run folders")
  report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  report.add_argument("--out", help="output folder (default: the run folder; required for several)")
  report.add_argument("--select", metavar="METRIC", type=_metric_name, help=_SELECT_HELP)
  return parser


def _run(args) -> int:
  from experiments import config as cfg_lib
  from experiments import distributed, report, runner
  if args.select and args.no_report:
    raise cfg_lib.ConfigError("--select needs the report; drop --no-report or --select.")
  _start_distributed(args)
  source = pathlib.Path(args.config)
  if source.is_dir():
    if not (source / "config.yaml").exists():
      raise cfg_lib.ConfigError(f"{source} is a folder without config.yaml: not a run folder.")
    config = cfg_lib.load(source / "config.yaml", args.overrides)
    out = pathlib.Path(args.out) if args.out else source
  else:
    config = cfg_lib.load(source, args.overrides)
    out = pathlib.Path(args.out) if args.out else pathlib.Path("runs") / config.name
  if distributed.is_writer():
    print(f"run folder: {out}", file=sys.stderr)
  runner.run(config, out, progress=not args.no_progress)
  if not distributed.is_writer():
    return 0
  status = 0
  if not args.no_report:
    status = _print_report(lambda: report.report([out], select=args.select), args.select)
  return max(status, _diverged(config, out))


def _diverged(config, out: pathlib.Path) -> int:
  """Says which members stopped on a non-finite loss; 1 when every trained member did."""
  import json
  from experiments import sweep
  statuses = {}
  for member in sweep.expand(config)[0]:
    path = out / "members" / member.id / "summary.json"
    if path.is_file():
      statuses[member.id] = json.loads(path.read_text()).get("status")
  diverged = sorted(m for m, s in statuses.items() if s == "nan")
  if not diverged:
    return 0
  every = len(diverged) == len(statuses)
  print(f"{'error' if every else 'warning'}: {len(diverged)} of {len(statuses)} member(s) "
        f"stopped on a non-finite loss: {', '.join(diverged)} (see their summary.json)",
        file=sys.stderr)
  return 1 if every else 0


def _variance(args) -> int:
  from experiments import config as cfg_lib
  from experiments import distributed, variance
  config = cfg_lib.load(args.config, args.overrides)
  out = pathlib.Path(args.out) if args.out else pathlib.Path("runs") / config.name
  _start_distributed(args)
  result = variance.run_variance(config, out, progress=not args.no_progress)
  if not distributed.is_writer():
    return 0
  last = max(result["checkpoints"])
  print((out / f"table_step{last}.md").read_text())
  print(f"wall time: {result['wall_time']:.1f} s", file=sys.stderr)
  return 0


def _evaluate(args) -> int:
  from experiments import evaluate, report
  status = 0
  for run_dir in args.run_dirs:
    try:
      result = evaluate.evaluate_run(run_dir, args.samples, args.splits)
    except ValueError as err:
      print(f"error: {err}", file=sys.stderr)
      status = 2
      continue
    for note in result["skipped"]:
      print(note, file=sys.stderr)
    print(f"{run_dir}: evaluated {len(result['evaluated'])} member(s) with m = {args.samples}",
          file=sys.stderr)
    if result["evaluated"] and not args.no_report:
      status = max(status, _print_report(lambda d=run_dir: report.report([d]), None))
  return status


def _layer_variance(args) -> int:
  import json
  from experiments import files
  from experiments.layer_variance import layer_variance
  try:
    result = layer_variance(args.member, args.estimators, args.keys)
  except (ValueError, TypeError) as err:  # a bad member folder or estimator spec
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"{args.member.name}, step {result['step']}, {result['keys']} gradients on "
        f"{result['batch_size']} {result['split']} images")
  print("| estimator | group | total variance | squared norm of the mean |")
  print("|---|---|---|---|")
  for name, groups in result["stats"].items():
    for group, (var, mean2) in groups.items():
      print(f"| {name} | {group} | {var:.4g} | {mean2:.4g} |")
  if args.json:
    files.write_atomic(args.json, json.dumps(result, indent=1))
  return 0


def _list() -> int:
  import yaml
  import gumbax
  from experiments import config as cfg_lib
  print("Configs (" + str(_configs_dir()) + "):")
  for path in sorted(_configs_dir().glob("*.yaml")):
    try:
      description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
    except yaml.YAMLError:
      description = "(invalid YAML)"
    print(f"  {path.name:40s} {str(description).strip().splitlines()[0] if description else ''}")
  print("\nTasks: " + ", ".join(cfg_lib.TASKS))
  print("\nEstimators (name: distributions, unbiased, f evaluations, reference):")
  for name in gumbax.estimators.names():
    cls = type(gumbax.estimators.get(name))
    print(f"  {name:24s} {'/'.join(cls.distributions):22s} "
          f"{'unbiased' if cls.unbiased else 'biased':9s} {cls.evaluations:8s} {cls.reference}")
  print("\nTemperature schedules: constant, exponential, linear, cosine (gumbax.schedules)")
  return 0


def _report(args) -> int:
  from experiments import report
  dirs = [pathlib.Path(d) for d in args.run_dirs]
  return _print_report(lambda: report.report(dirs, args.out, select=args.select), args.select)


def _print_report(make_report, select: str | None) -> int:
  """Runs ``make_report`` and prints its tables; a bad folder or metric is exit status 2."""
  try:
    result = make_report()
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(pathlib.Path(result["table_md"]).read_text())
  if select is not None:
    print(f"Chosen by the lowest mean {select} per estimator ({result['selected_md']}):\n")
    print(pathlib.Path(result["selected_md"]).read_text())
  for note in result.get("skipped", []):
    print(note, file=sys.stderr)
  return 0


def main(argv: list[str] | None = None) -> int:
  """Entry point; returns the exit status: 0 on success, 1 when every member of a run
  diverged, 2 for a user error (bad arguments, config, override, missing or corrupt
  data, an unwritable folder), each said in one ``error:`` line; 3 when a process of
  a distributed run fails (e.g. a peer died)."""
  args = _parser().parse_args(argv)
  from experiments.config import ConfigError
  from experiments.data import MnistCorruptError, MnistNotFoundError
  try:
    if args.command == "run":
      return _run(args)
    if args.command == "variance":
      return _variance(args)
    if args.command == "evaluate":
      return _evaluate(args)
    if args.command == "layer-variance":
      return _layer_variance(args)
    if args.command == "list":
      return _list()
    return _report(args)
  except (ConfigError, MnistNotFoundError, MnistCorruptError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  except OSError as err:  # e.g. an --out folder that cannot be written
    print(f"error: {err.strerror or err}{f': {err.filename}' if err.filename else ''}",
          file=sys.stderr)
    return 2
  except Exception as err:
    _stop_distributed(err)
    raise


def _stop_distributed(err: Exception) -> None:
  """In a run of several processes, a failure (most often a peer that died, which
  breaks the collectives) ends this process at once with exit status 3 and one
  ``error:`` line, instead of waiting for the others at shutdown."""
  import os
  import traceback
  import jax
  if not jax.distributed.is_initialized():
    return
  first = (str(err).strip().splitlines() or [type(err).__name__])[0]
  traceback.print_exc()
  print(f"error: process {jax.process_index()} of {jax.process_count()} stopped: {first} "
        "(if another process died, its log says why)", file=sys.stderr, flush=True)
  os._exit(3)
