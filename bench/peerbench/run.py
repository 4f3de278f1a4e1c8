"""A whole run: the runners asked for, every model of --models and every layer bench timed and
checked, the machine, the bars, the report and the files; or (--from-json) the report of a
saved run."""
import importlib.util
import json
import os
import pathlib
import shlex
import sys
import tempfile

from .catalog import (BASELINE, COUNTS_WITHIN_DB, DEPLOY_PEERS, FLOAT_KEYS, INT8_KEYS,
                      INT16_KEYS, LABELS, RUNNER_KEYS, TFLITE_FLOAT_KEYS)
from .file_bench import bench_tflite_file
from .layer_benches import build_micro
from .measure import machine_info
from .model_bench import bench_model
from .models import ModelInputs, ensure_zoo, model_paths
from .report import print_header, print_not_run, print_report, write_markdown
from .runners.base import Unavailable
from .verdicts import set_verdicts


def console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def from_json(args):
    """--from-json: the report (and --markdown) of a saved run, with this version's bars."""
    out = console()
    results = json.loads(pathlib.Path(args.from_json).read_text())
    keys = [k for k in RUNNER_KEYS
            if any(k in res["runners"] for res in results["models"].values())]
    set_verdicts(results)                            # with this version's rules
    print_report(out, results, keys, results["settings"]["batches"])
    if args.markdown:
        write_markdown(args.markdown, results, keys, results["settings"]["batches"])
        out.print(f"wrote {args.markdown}")
    return 0


def wanted_runners(args):
    """The runner keys of this run, in RUNNER_KEYS order: the int8 ones (and with --int16 the
    int16 ones, with --float the float ones), or --only's, less --skip's; always the
    baseline."""
    base = (INT8_KEYS + TFLITE_FLOAT_KEYS + (INT16_KEYS if args.int16 else [])
            + (FLOAT_KEYS if args.float else []))
    want = [k for k in RUNNER_KEYS
            if ((k in args.only) if args.only else (k in base)) or k == BASELINE]
    return [k for k in want if k not in args.skip]


def other_kernel_builds(args):
    """The fixnet kernel builds the layer benches are also timed with (--micro-isa, default
    every build this CPU runs), less the one this process runs."""
    import fixnet._kernels as kernels

    builds = kernels.available_builds() if args.micro_isa is None else args.micro_isa
    return [b for b in builds if b != kernels.ISA]


def command_line(argv=None):
    """This run's command, as a shell would take it (FIXNET_ISA and PYTHONPATH included)."""
    words = sys.argv if argv is None else sys.argv[:1] + list(argv)
    env = [f"{v}={shlex.quote(os.environ[v])}" for v in ("FIXNET_ISA", "PYTHONPATH")
           if v in os.environ]
    return " ".join(env + [shlex.quote(sys.executable)] + [shlex.quote(a) for a in words])


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args, argv=None):
    """Time and check every model and layer bench of `args`; print the report, write --json
    and --markdown. `argv`: the arguments as given (for the command in the report)."""
    out = console()
    batches = sorted(set(args.batches))
    want = wanted_runners(args)
    args.micro_isa_list = other_kernel_builds(args)
    results = {"settings": {"batches": batches, "rounds": args.rounds, "sample_ms": args.sample_ms,
                            "warmup": args.warmup, "threads": args.threads, "baseline": BASELINE,
                            "accuracy_samples": args.accuracy_samples,
                            "ratio": "fixnet_over = median over rounds of fixnet int8 sample / "
                                     "runner sample (below 1: fixnet faster)",
                            "counts_within_db": COUNTS_WITHIN_DB, "deploy_peers": DEPLOY_PEERS,
                            "command": command_line(argv),
                            "load_before": load_average()},
               "models": {}}
    for path in ensure_zoo(model_paths(args.models), out):
        if path.suffix == ".tflite":
            name = file_model_name(path, results["models"])
            out.print(f"[bold]{name}[/bold] ({path}): fixnet and TFLite on the file ...")
            results["models"][name] = bench_tflite_file(path, name, args, want, out)
            continue
        out.print(f"[bold]{path.stem}[/bold]: building runners ...")
        m = ModelInputs.fixture(path, batches, args.accuracy_samples)
        results["models"][m.name] = bench_model(m, args, want, out, LABELS)
    run_layer_benches(args, batches, want, out, results)

    results["settings"]["load_after"] = load_average()
    results["machine"] = machine_info(args.threads)
    set_verdicts(results)
    print_header(out, results, args.threads, args.rounds)
    print_not_run(out, results)
    keys = [k for k in RUNNER_KEYS if k in want]
    print_report(out, results, keys, batches)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        out.print(f"wrote {args.json}")
    if args.markdown:
        write_markdown(args.markdown, results, keys, batches)
        out.print(f"wrote {args.markdown}")
    return 0


def file_model_name(path, taken):
    """The report's name of a .tflite file: its file name without .tflite, with its folder's
    name in front where another model of the run has that name already."""
    name = path.stem
    return name if name not in taken else f"{path.parent.name}/{name}"


def run_layer_benches(args, batches, want, out, results):
    """Build, time and check each layer bench of --micro (in a temporary folder) into
    results["models"]; one that cannot be built is skipped with the reason, and all of them
    where TensorFlow is not installed."""
    if not args.micro:
        return
    if importlib.util.find_spec("tensorflow") is None:
        # the layer benches make their Keras layer and its int8 .tflite here (the fixtures'
        # .tflite files are stored in models/): nothing to run without TensorFlow
        out.print(f"layer benches ({', '.join(args.micro)}) skipped: they build their "
                  "Keras layers and int8 .tflite with TensorFlow, which is not installed "
                  "here (--micro none leaves them out)")
        return
    with tempfile.TemporaryDirectory(prefix="fixnet-peers-") as tmpdir:
        for name in args.micro:
            out.print(f"[bold]{name}[/bold] (layer bench): building the Keras layer, "
                      "its .h5 and int8 .tflite ...")
            try:
                m = build_micro(name, batches, args.accuracy_samples, args.threads, tmpdir)
            except Unavailable as e:
                out.print(f"  skipped: {e}")
                continue
            except Exception as e:  # noqa: BLE001 - a failed conversion is reported
                out.print(f"  skipped: {type(e).__name__}: {e}")
                continue
            results["models"][name] = bench_model(m, args, want, out, LABELS, tmpdir)
