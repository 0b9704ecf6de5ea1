"""The `harness` command line: parses flags, calls the library, prints. Nothing else happens here.

Each command imports what it runs inside its own function body: the library's modules pull in jax,
tensorflow and the task modules, which cost seconds, and `harness --help` (or a mistyped flag) must
answer at once. This is the one place in the package that imports lazily for that reason.
"""

from __future__ import annotations

import sys
import traceback

import click

from harness import progress
from harness.errors import HarnessError, os_error
from harness.files import check_folder, check_output_file, default_cache_dir, side_files_under, write_text_atomic
from harness.models.variants import decode_variant, model_table
from harness.scale.runtime import (
    ENV_CPU_DEVICES,
    check_xla_flags,
    parse_cpu_devices,
    start_backend,
    start_jax,
    use_cpu_devices,
)
from harness.tf_import import quiet_tensorflow_import


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise HarnessError(f"--set {v!r}: expected key=value, e.g. --set shots=1,5")
        k, _, val = v.partition("=")
        out[k.strip()] = val.strip()
    return out


class _Group(click.Group):
    """Turns HarnessError into one line on stderr and exit code 2."""

    def invoke(self, ctx):
        # Libraries' side files (matplotlib's font cache, keras.json) under the harness's cache, not $HOME.
        side_files_under(default_cache_dir())
        quiet_tensorflow_import()
        try:
            with progress.log_lines():  # the library's warnings as `warning: ...` lines
                return super().invoke(ctx)
        except HarnessError as e:
            self._error_line(e)
            sys.exit(e.exit_code)
        except OSError as e:
            # A full disk or an unwritable folder met somewhere no writer of ours maps it: still one line.
            mapped = os_error(e, e.filename or "a file")
            if mapped is None:
                raise
            self._error_line(mapped)
            sys.exit(mapped.exit_code)
        except KeyboardInterrupt:
            # A progress bar's line has no newline yet: the message must not be glued onto its end.
            fresh = "\n" if progress.close_all() else ""
            click.echo(f"{fresh}interrupted; finished work is kept and a rerun resumes it", err=True)
            sys.exit(130)

    @staticmethod
    def _error_line(e: Exception) -> None:
        fresh = "\n" if progress.close_all() else ""
        click.echo(f"{fresh}error: {e}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sovit-harness")
def main():
    """Evaluate ViT / SoViT encoders the way "Getting ViT in Shape" did."""


@main.command()
@click.option("--task", "task_name", default=None, help="Task name (see `harness ls tasks`).")
@click.option("--suite", default=None, help="Suite name (proxy, paper) or a .toml suite file; instead of --task.")
@click.option("--ckpt", default=None, help="Checkpoint: file.npz[:img], tensorstore folder, HF SigLIP folder, "
              "harness checkpoint, or random[:seed]. The proxy suite defaults to the committed proxy checkpoint.")
@click.option("--variant", default=None, help="Variant string, e.g. So400m/14 (checked against the checkpoint).")
@click.option("--res", type=int, default=None, help="Input resolution (posemb is resampled to it).")
@click.option("--preset", default=None, help="Named settings of the task, e.g. proxy.")
@click.option("--data-dir", default=None, help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets).")
@click.option("--out", "out_dir", default="runs", show_default=True, help="Folder of result records.")
@click.option("--cache-dir", default=None, help="Feature cache (default $HARNESS_CACHE_DIR or ~/.cache/sovit-harness).")
@click.option("--set", "sets", multiple=True, help="key=value: a task setting or an encoder config key.")
@click.option("--name", default=None, help="Row name of this checkpoint in reports (default: file name).")
@click.option("--force", is_flag=True, help="Recompute even if an identical finished record exists.")
@click.option("--coordinator", default=None, help="Multi-process run: host:port of process 0 "
              "(or $JAX_COORDINATOR_ADDRESS); with --num-processes and --process-id.")
@click.option("--num-processes", type=int, default=None, help="Multi-process run: number of processes "
              "(or $JAX_NUM_PROCESSES).")
@click.option("--process-id", type=int, default=None, help="Multi-process run: this process, from 0 "
              "(or $JAX_PROCESS_ID). Process 0 writes the records.")
@click.option("--params", "param_sharding", type=click.Choice(["replicate", "fsdp"]), default="replicate",
              show_default=True, help="With several devices: parameters replicated or FSDP-sharded.")
@click.option("--cpu-devices", default=None, envvar=ENV_CPU_DEVICES,
              help="Split the host CPU into N XLA devices (or 'auto': one per core) so that the mesh runs "
                   "over the cores ($HARNESS_CPU_DEVICES).")
@click.option("--log-samples/--no-log-samples", default=True, show_default=True,
              help="Write what was predicted per example beside each record (<record>.samples.jsonl.gz), for "
                   "`harness rescore`, `report --compare` and the HTML report's example pages.")
def run(task_name, suite, ckpt, variant, res, preset, data_dir, out_dir, cache_dir, sets, name, force,
        coordinator, num_processes, process_id, param_sharding, cpu_devices, log_samples):
    """Run one task (or a suite of tasks) on one checkpoint and write result records."""
    if bool(task_name) == bool(suite):
        raise HarnessError("give exactly one of --task NAME or --suite NAME")
    # Everything the command line alone can tell is checked before a model or a dataset is touched.
    if res is not None and res < 1:
        raise HarnessError(f"--res {res}: must be a positive resolution in pixels (a multiple of the patch "
                           "size, e.g. --res 224)")
    if variant:
        decode_variant(variant)
    check_folder("--out", out_dir)
    check_folder("--cache-dir" if cache_dir else "the feature cache ($HARNESS_CACHE_DIR)",
                 cache_dir or default_cache_dir())
    if cache_dir:
        side_files_under(cache_dir)
    check_folder("--data-dir", data_dir, write=False)
    check_xla_flags()  # the user's, before --cpu-devices adds its own
    if cpu_devices:
        use_cpu_devices(cpu_devices)
    from harness.report import to_markdown
    from harness.run import suites
    from harness.scale import sharding

    distributed = sharding.initialize(coordinator, num_processes, process_id)
    start_backend()
    sharding.set_param_strategy(param_sharding)
    enc = {}
    if variant:
        enc["variant"] = variant
    if res:
        enc["res"] = res
    if task_name:
        entries = [suites.Planned(task_name, preset, _parse_sets(sets))]
    else:
        if preset:
            raise HarnessError("--preset applies to --task; a suite's entries name their own presets")
        entries = suites.plan(suites.load_suite(suite), _parse_sets(sets))
        ckpt = ckpt or suites.default_ckpt(suite)
        if ckpt is None:
            raise HarnessError(f"suite {suite!r} needs --ckpt (a checkpoint to evaluate)"
                               + (f"; the default {suites.PROXY_CKPT} is missing" if suite == "proxy" else ""))
    verbose = bool(suite)
    records, failed = [], []
    for done in suites.run_entries(entries, ckpt, encoder_config=enc, keep_going=verbose, distributed=distributed,
                                   data_dir=data_dir, out_dir=out_dir, cache_dir=cache_dir, name=name, force=force,
                                   log_samples=log_samples):
        where = f"[{done.index + 1}/{len(entries)}] {done.label}"
        if done.error is not None:
            failed.append(done.label)
            if not isinstance(done.error, HarnessError):
                traceback.print_exception(done.error)
            why = done.error if isinstance(done.error, HarnessError) else f"{type(done.error).__name__}: {done.error}"
            click.echo(f"{where}: failed: {why}", err=True)
            continue
        records.append(done.record)
        if not sharding.is_writer():
            continue
        if verbose:
            state = "reused" if done.reused else f"done in {done.seconds:.0f}s"
            click.echo(f"{where}: {state} -> {done.path}", err=True)
        else:
            click.echo(f"{'reused' if done.reused else 'wrote'} {done.path}", err=True)
    if sharding.is_writer():
        click.echo(to_markdown(records))
    if failed:
        raise HarnessError(f"{len(failed)} of {len(entries)} suite entries failed: {', '.join(failed)}; "
                           "the others' records are written, and a rerun resumes")


@main.group()
def ls():
    """List tasks, models or datasets."""


@ls.command("tasks")
@click.argument("pattern", default="*")
def ls_tasks(pattern):
    """Registered tasks (entry-point group harness.tasks)."""
    from harness.api.registry import get_task, list_tasks

    for name in list_tasks(pattern):
        try:
            task = get_task(name)
        except Exception as e:  # a broken plugin must not hide the others
            click.echo(f"{name:<20} (failed to load: {type(e).__name__}: {e})")
            continue
        presets = ", ".join(task.presets) or "-"
        click.echo(f"{name:<20} {task.description}  [presets: {presets}]")


@ls.command("models")
@click.argument("pattern", default="*")
@click.option("--res", type=int, default=224, show_default=True, help="Resolution for the GFLOPs column.")
@click.option("--pool-type", default=None, help="Pooling head counted in params/GFLOPs (default: as in the "
              "paper's table: MAP for So150m, So400m and G, none for the others).")
def ls_models(pattern, res, pool_type):
    """Every variant with parameters (M) and GFLOPs (2 x multiply-adds) at --res."""
    rows = model_table(res, pattern, pool_type)
    if not rows:
        raise HarnessError(f"no variant matches {pattern!r}; try `harness ls models` for the full list")
    click.echo(f"{'variant':<10} {'width':>6} {'depth':>5} {'mlp':>6} {'heads':>5} {'pool':>5} {'res':>5} "
               f"{'params (M)':>11} {'GFLOPs':>9}")
    for r in rows:
        click.echo(f"{r['variant']:<10} {r['width']:>6} {r['depth']:>5} {r['mlp_dim']:>6} {r['num_heads']:>5} "
                   f"{r['pool_type']:>5} {r['res']:>5} {r['params_m']:>11.1f} {r['gflops']:>9.1f}")


@ls.command("datasets")
@click.option("--data-dir", default=None, help="TFDS data dir to check.")
def ls_datasets(data_dir):
    """Known datasets, whether each is prepared under --data-dir, and for a missing one the command that
    prepares it and what that needs (which files go where)."""
    from harness import data

    d = data.default_data_dir(data_dir)
    click.echo(f"data dir: {d}")
    for name, info in data.DATASETS.items():
        prepared = data.is_prepared(name, d)
        click.echo(f"{name:<22} {'prepared' if prepared else 'missing '}  {info.description}".rstrip())
        if not prepared:
            click.echo(f"{'':<22} to prepare: {info.prepare_command(d)}")
            click.echo(f"{'':<22} needs: {info.needs(d)}")


@main.command()
@click.argument("runs", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "latex", "html"]), default="md", show_default=True,
              help="html: a self-contained page with plots (needs -o).")
@click.option("-o", "--output", default=None, help="Write to this file instead of stdout.")
@click.option("--baseline", default=None, help="Baseline JSON, a run folder or record of one checkpoint, or a row "
              "name (e.g. 'SoViT-400m/14 (paper)'): its row comes first and every cell gets a delta.")
@click.option("--with", "with_", multiple=True, type=click.Choice(["paper"]),
              help="paper: add the paper's published rows (harness/assets/paper.json).")
@click.option("--show-seeds", is_flag=True, help="Also show per-seed and std-over-seeds columns.")
@click.option("--layout", type=click.Choice(["long", "wide"]), default=None,
              help="Markdown: long (default; per task, rows = metrics, columns = checkpoints, value ± CI "
              "half-width) or wide (rows = checkpoints, columns = metrics, value [lo, hi]).")
@click.option("--compare", nargs=2, default=None, metavar="A B",
              help="Checkpoint B against A on the examples both evaluated (each a row name of RUNS or a folder of "
              "one checkpoint's records): per metric B - A, its paired bootstrap CI, a p-value, and the examples "
              "80%% power needs; from the records' samples files.")
@click.option("--data-dir", default=None, help="HTML: TFDS data dir to read the proxies' images from for the pages "
              "of examples (default $TFDS_DATA_DIR or ~/tensorflow_datasets).")
def report(runs, fmt, output, baseline, with_, show_seeds, layout, compare, data_dir):
    """Comparison tables of the result records under RUNS, one per task (Markdown: rows = metrics, columns =
    checkpoints; --layout wide, CSV, LaTeX and HTML: rows = checkpoints, columns = metrics). The HTML page links,
    per task, a page of the worst and the most uncertain examples (from the records' samples files)."""
    from harness.report import report_command

    check_output_file("-o", output)
    if compare:
        if baseline or with_ or layout:
            raise HarnessError("--compare A B makes its own table; drop --baseline, --with and --layout")
        from harness.report.compare import compare_command

        # With -o the table goes to the file and "wrote FILE" to stderr, so that `-o /dev/stdout` is a pipe.
        click.echo(compare_command(runs, *compare, fmt=fmt, output=output, show_seeds=show_seeds), nl=False,
                   err=bool(output))
        return
    # With -o the table goes to the file and "wrote FILE" to stderr, so that `-o /dev/stdout` is a pipe.
    click.echo(report_command(runs, fmt=fmt, output=output, baseline=baseline, with_paper="paper" in with_,
                              show_seeds=show_seeds, layout=layout, data_dir=data_dir), nl=False, err=bool(output))


@main.command()
@click.argument("records", nargs=-1, required=True)
def rescore(records):
    """Recompute every metric of RECORDS (record files or folders) from their samples files with the metric code
    installed now; print recorded vs rescored; exit 1 naming each metric that moved."""
    from harness.report.rescore import rescore_command

    text, code = rescore_command(records)
    click.echo(text, nl=False)
    sys.exit(code)


@main.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--baseline", default=None, help="Baseline JSON (e.g. reports/baselines/proxy.json) or a run folder.")
@click.option("--tolerance", type=float, default=None, help="Allowed drop for every metric, in its stored units "
              "(overrides the baseline's per-metric tolerances and bands).")
@click.option("--rel-tolerance", type=float, default=None, help="Allowed drop as a fraction of the baseline value.")
@click.option("--write-baseline", default=None, help="Instead of checking, write a baseline from RUNS to this file.")
@click.option("--name", default=None, help="With --write-baseline: the checkpoint row to take (when RUNS hold several).")
def check(runs, baseline, tolerance, rel_tolerance, write_baseline, name):
    """Regression gate: exit 1 naming each metric of RUNS worse than the baseline by more than allowed."""
    from harness.report import check_command, write_baseline_command

    if write_baseline:
        if baseline:
            raise HarnessError("give --baseline (to check) or --write-baseline (to write one), not both")
        check_output_file("--write-baseline", write_baseline)
        click.echo(write_baseline_command(runs, write_baseline, name=name, tolerance=tolerance))
        return
    if not baseline:
        raise HarnessError("--baseline FILE is required (or --write-baseline FILE to create one)")
    code = check_command(runs, baseline, tolerance=tolerance, rel_tolerance=rel_tolerance, echo=click.echo)
    sys.exit(code)


@main.command()
@click.argument("name")
@click.option("--data-dir", default=None, help="TFDS data dir to prepare into.")
@click.option("--manual-dir", default=None, help="Folder with the files placed by hand (`harness ls datasets` says "
              "which; e.g. ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, the unzipped objectnet-1.0/, "
              "gqa/, ocrvqa/) and copies of files TFDS would download; default <data-dir>/downloads/manual.")
def prepare(name, data_dir, manual_dir):
    """Prepare any dataset `harness ls datasets` lists (TFDS's builders and the harness's own)."""
    from harness import data

    done = data.is_prepared(name, data_dir)
    path = data.prepare(name, data_dir, manual_dir=manual_dir)
    click.echo(f"{name} is already prepared under {path}" if done else f"prepared {name} under {path}")


@main.command()
@click.option("--out", required=True, help="Where to write the big_vision .npz checkpoint.")
@click.option("--data-dir", default=None)
@click.option("--set", "sets", multiple=True, help="key=value of PretrainConfig (width, depth, steps, lr, ...).")
@click.option("--ckpt-dir", default=None, help="Keep resumable training state here.")
def pretrain(out, data_dir, sets, ckpt_dir):
    """Pretrain an encoder from scratch (default: the proxy SoViT on proxy_scenes' pretrain split)."""
    from harness import api
    from harness.train.pretrain import PretrainConfig
    from harness.train.pretrain import pretrain as run_pretrain

    class _T(api.Task):
        name = "pretrain"
        Config = PretrainConfig

    cfg = api.make_config(_T(), None, _parse_sets(sets))
    start_jax()
    summary = run_pretrain(cfg, out, data_dir=data_dir, ckpt_dir=ckpt_dir)
    click.echo(f"wrote {summary['out']} (loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, "
               f"{summary['seconds']:.0f}s)")


@main.command()
@click.option("--budget", "budgets", type=float, multiple=True, help="Encoder GFLOPs per image at --res "
              "(repeatable); default: the SoViTs' compute (71.4 and 220.4 at 224 px, patch 14).")
@click.option("--kind", type=click.Choice(["classification", "decoding"]), default="classification",
              show_default=True, help="Which of the paper's exponents to use (and compare a fit with).")
@click.option("--from", "from_runs", multiple=True, help="Folder of `harness sweep` result records: fit the "
              "scaling law to them and use the fitted exponents.")
@click.option("--metric", default=None, help="Metric to fit (default: the sweep's, e.g. fewshot/proxy_scenes/10shot; "
              "an accuracy in % is fitted as the error 100 - value).")
@click.option("--start", default="608,10,928", show_default=True, help="Compute-optimal start shape width,depth,mlp.")
@click.option("--heads", "num_heads", type=int, default=16, show_default=True, help="Heads (fixed; width is a multiple).")
@click.option("--patch", type=int, default=14, show_default=True, help="Patch size (fixed).")
@click.option("--res", type=int, default=224, show_default=True, help="Resolution the GFLOPs are counted at.")
@click.option("--bootstrap", type=int, default=100, show_default=True, help="Bootstrap refits for the intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--plots", "plots_dir", default=None, help="Write PNG plots (fits per dimension, frontier) here.")
@click.option("-o", "--output", default=None, help="Also write the markdown report to this file.")
def shape(budgets, kind, from_runs, metric, start, num_heads, patch, res, bootstrap, seed, plots_dir, output):
    """Compute-optimal ViT shape for a compute budget (the paper's scaling law), from its exponents or a sweep."""
    from harness.report.records import load_records
    from harness.shape.report import shape_report

    try:
        start_shape = tuple(float(v) for v in start.split(","))
    except ValueError:
        start_shape = ()
    if len(start_shape) != 3 or min(start_shape) <= 0:
        raise HarnessError(f"--start {start!r}: expected width,depth,mlp, e.g. --start 608,10,928")
    records = [r for folder in from_runs for r in load_records(folder)] if from_runs else None
    text = shape_report(budgets=budgets, kind=kind, records=records, metric=metric, start=start_shape,
                        num_heads=num_heads, patch=patch, res=res, bootstrap=bootstrap, seed=seed,
                        plots_dir=plots_dir)
    if output:
        write_text_atomic(output, text)
    click.echo(text, nl=False)


@main.command()
@click.option("--out", "out_dir", default="runs/sweep", show_default=True, help="Sweep folder (models, records).")
@click.option("--preset", default="proxy", show_default=True, help="proxy (39 runs around 64/6/256) or tiny (smoke test).")
@click.option("--set", "sets", multiple=True, help="key=value of the sweep (widths=32,96, steps=250,500, batch_size, ...).")
@click.option("--data-dir", default=None)
@click.option("--cache-dir", default=None, help="Feature cache (default $HARNESS_CACHE_DIR or ~/.cache/sovit-harness).")
@click.option("--dry-run", is_flag=True, help="List the runs and their training compute; train nothing.")
def sweep(out_dir, preset, sets, data_dir, cache_dir, dry_run):
    """Star sweep: pretrain each shape at several lengths, score it few-shot; `harness shape --from` fits it."""
    from harness.shape import sweep as sw

    cfg = sw.make_config(preset, _parse_sets(sets))
    if cache_dir:
        side_files_under(cache_dir)
    if dry_run:
        click.echo(sw.describe_plan(cfg), nl=False)
        return
    start_jax()
    records = sw.run_sweep(cfg, out_dir, data_dir=data_dir, cache_dir=cache_dir,
                           echo=lambda m: click.echo(m, err=True))
    click.echo(f"{len(records)} sweep records under {out_dir}/records; fit them with "
               f"`harness shape --from {out_dir}/records`")


@main.command()
@click.option("--variants", default="So400m/14,So150m/14", show_default=True, help="Comma-separated variants.")
@click.option("--res", default="224", show_default=True, help="Comma-separated resolutions, e.g. 224,384.")
@click.option("--batches", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--dtypes", default="float32,bfloat16", show_default=True, help="Matmul dtypes (float32, bfloat16).")
@click.option("--compare", default=None, type=click.Choice(["hf"]), help="Also time HF SiglipVisionModel (torch).")
@click.option("--no-scan", is_flag=True, help="Unrolled layers instead of scanned ones (slower to compile).")
@click.option("--seconds", "min_seconds", type=float, default=2.0, show_default=True, help="Per timed round.")
@click.option("--runs", default=None, help="Result-record folder: per-task cost and feature-cache savings.")
@click.option("--no-encoder", is_flag=True, help="No encoder measurements (only --pipeline, --end-to-end, --runs).")
@click.option("--out", default=None, help="Also write the figures as JSON here.")
@click.option("--csv", "csv_path", default=None, help="Also write the encoder rows here in timm benchmark.py's "
              "CSV columns, plus precision, MFU and device.")
@click.option("--peak-n", type=int, default=2048, show_default=True,
              help="Side of the square matmuls of the peak measurement (and twice it).")
@click.option("--cpu-devices", default="1", show_default=True,
              help="Comma-separated XLA CPU device counts to time the encoder with ('auto': one per core); "
                   "with N > 1 each batch is split over the N devices.")
@click.option("--repeats", type=int, default=1, show_default=True,
              help="Run every measurement N times, ours and HF's interleaved; report the fastest.")
@click.option("--pipeline", is_flag=True, help="Time the input pipeline on real-format JPEGs (--data-dir) against a "
              "best-practice tf.data pipeline: images/s per host core.")
@click.option("--end-to-end", "end_to_end", is_flag=True, help="Time pipeline, encoder and the whole extraction "
              "(pipeline + encoder + feature cache) on real-format JPEGs: images/s and the overlap ratio.")
@click.option("--data-dir", default=None, help="TFDS folder with the JPEGs of --pipeline / --end-to-end "
              "(python benchmarks/make_jpegs.py makes them).")
@click.option("--dataset", default="imagenet2012", show_default=True, help="Dataset of --pipeline / --end-to-end.")
@click.option("--split", default="validation", show_default=True)
@click.option("--num-images", type=int, default=None, help="Images of --pipeline / --end-to-end (default: the split).")
@click.option("--pipeline-batch", type=int, default=64, show_default=True,
              help="Batch size of --pipeline / --end-to-end.")
def bench(variants, res, batches, dtypes, compare, no_scan, min_seconds, runs, no_encoder, out, csv_path, peak_n,
          cpu_devices, repeats, pipeline, end_to_end, data_dir, dataset, split, num_images, pipeline_batch):
    """Encoder images/s, MFU, % of this machine's matmul peak, compile time, peak RSS (vs HF torch); the input
    pipeline and the whole extraction on real-format files."""
    from harness.tools.bench import bench_command

    bench_command(variants=[v.strip() for v in variants.split(",") if v.strip()],
                  res=[_positive_int("--res", r) for r in res.split(",") if r.strip()],
                  cpu_devices=[parse_cpu_devices(n) for n in cpu_devices.split(",") if n.strip()], repeats=repeats,
                  batches=[_positive_int("--batches", b) for b in batches.split(",") if b.strip()],
                  dtypes=[d.strip() for d in dtypes.split(",") if d.strip()], compare=compare, scan=not no_scan,
                  min_seconds=min_seconds, runs=runs, out=out, csv=csv_path, peak_n=peak_n, encoder=not no_encoder,
                  pipeline=pipeline, end_to_end=end_to_end, data_dir=data_dir, dataset=dataset, split=split,
                  num_images=num_images, pipeline_batch=pipeline_batch, echo=click.echo,
                  note=lambda m: click.echo(m, err=True))


def _positive_int(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise HarnessError(f"{flag} {text.strip()!r}: give positive integers separated by commas, e.g. 224,384")
    return value


@main.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True)
def demo(out_dir):
    """Build a tiny SoViT-shaped encoder, save it as big_vision .npz, reload it, print features and models."""
    from harness.tools.demo import main as demo_main

    start_jax()
    demo_main(out_dir)


if __name__ == "__main__":
    main()
