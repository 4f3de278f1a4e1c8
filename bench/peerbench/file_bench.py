"""One .tflite file given on --models (a user's own, a benchmark's): fixnet on the file beside
TFLite's three interpreters on the same file, timed in interleaved rounds, and fixnet's outputs
compared with TFLite's on the same random inputs; the file's entry of the results. A file
fixnet refuses (or fails to run) is skipped with fixnet's reason, and the run goes on."""
import os

from .catalog import TFLITE_FILE_BASE, TFLITE_FILE_KEYS, TFLITE_FILE_KIND, TFLITE_FILE_SAMPLES
from .exactness import exactness
from .measure import blas_limit, measure, summarize
from .runners.base import Unavailable
from .runners.fixnet_runners import fixnet_file_runner
from .runners.tflite_file import FILE_KINDS, batch_resizable, tflite_file_runners
from .text import one_line
from .tflite_inputs import TfliteFileInputs, input_specs

SKIP_LINES = 3          # the lines of fixnet's refusal a skipped file's entry keeps


def refusal(e, path, lines=SKIP_LINES):
    """fixnet's error on a file, its first `lines` lines on one line, without the file's path
    (the row names the file)."""
    text = str(e)
    for prefix in (f"{path}: ", f"{os.path.abspath(path)}: "):
        text = text.replace(prefix, "", 1) if text.startswith(prefix) else text
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    more = len(kept) - lines
    return one_line("\n".join(kept[:lines]), 400) + (f" (+{more} more lines)" if more > 0 else "")


def bench_tflite_file(path, name, args, want, console):
    """The results of the .tflite file `path` (named `name` in the report) for the TFLite
    runners of `want`; fixnet on the file is always timed (the baseline of the file's
    ratios). A file fixnet cannot load or run: {"skipped": fixnet's reason, ...}."""
    import fixnet
    from fixnet.cost import model_macs

    res = {"kind": TFLITE_FILE_KIND, "what": str(path), "file": str(path), "runners": {}}
    try:
        qm = fixnet.load(str(path))
    except Exception as e:  # noqa: BLE001 - FixnetError (unsupported ops) or a broken file
        res["skipped"] = ("fixnet refuses it: " if isinstance(e, fixnet.FixnetError)
                          else f"fixnet cannot load it: {type(e).__name__}: ") + refusal(e, path)
        res["skipped_detail"] = str(e)
        console.print(f"  skipped: {res['skipped']}")
        return res
    specs = input_specs(qm)
    acc = args.accuracy_samples or TFLITE_FILE_SAMPLES
    batch_free, why_fixed = batch_axis(path, specs, args, acc)
    m = TfliteFileInputs(path, name, specs, args.batches, acc, batch_free)
    res.update({"inputs": [s.describe() for s in specs], "outputs": len(qm.outputs),
                "batch_free": batch_free, "batch_note": m.batch_note(), "accuracy_samples": acc,
                "seed": m.seed, "macs_per_sample": model_macs(qm)})
    if why_fixed:
        res["batch_fixed_why"] = why_fixed
    try:
        runners = [fixnet_file_runner(m, qm, args.threads)]
    except Exception as e:  # noqa: BLE001 - loads but does not run: skipped, with the reason
        res["skipped"] = f"fixnet fails to run it: {type(e).__name__}: {refusal(e, path)}"
        console.print(f"  skipped: {res['skipped']}")
        return res
    status = {}
    keys = [k for k, _, _, _ in FILE_KINDS if k in want]
    if keys:
        try:
            made, failed = tflite_file_runners(m, want, args.tflite, args.threads, qm.outputs)
        except Unavailable as e:
            made, failed = [], [(k, label, str(e)) for k, label, _, _ in FILE_KINDS if k in keys]
        runners += made
        status = {k: (label, why) for k, label, why in failed}
    if m.batch_note():
        console.print(f"  {m.batch_note()}")
    res["exactness"] = exactness(runners, m)
    per_batch = {}
    for n in m.timed:
        console.print(f"  {name} batch {n}: {len(runners)} runners x {args.rounds} "
                      "interleaved rounds")
        with blas_limit(args.threads):
            samples, inner = measure(runners, n, args.rounds, args.sample_ms / 1000, args.warmup)
        per_batch[n] = summarize(samples, inner, res["macs_per_sample"], n,
                                 base_key=TFLITE_FILE_BASE)
    res["runners"] = runner_entries(runners, status, m.timed, per_batch)
    res["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())      # after timing
    return res


def batch_axis(path, specs, args, acc):
    """(whether TFLite resizes the file's batch axis to the largest batch size of the run,
    why not); (None, "") where no TFLite is installed to say, (True, "") at batch 1 only."""
    n = max(set(args.batches) | {acc})
    if n == 1:
        return True, ""
    try:
        return batch_resizable(path, specs, n, args.tflite, args.threads)
    except Unavailable:
        return None, ""


def runner_entries(runners, status, timed, per_batch):
    """Each runner's entry of the file's results, in catalog.TFLITE_FILE_KEYS order: label,
    status, note and its times per batch; or why it did not run."""
    out = {}
    for key in TFLITE_FILE_KEYS:
        r = next((r for r in runners if r.key == key), None)
        if r is not None:
            out[key] = {"label": r.label, "status": "ok", "note": r.note,
                        "batches": {str(n): per_batch[n][key] for n in timed}}
        elif key in status:
            label, why = status[key]
            short = ("not installed" if why.startswith(("not installed", "tensorflow not"))
                     else why.splitlines()[0][:120])
            out[key] = {"label": label, "status": short, "note": why}
    return out
