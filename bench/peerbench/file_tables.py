"""The report's tables of the .tflite files given on --models: per batch size, fixnet's time on
the file over each TFLite interpreter's on the same file; the exactness of fixnet's outputs
against TFLite's; the files that were skipped, with fixnet's reason. (title, header, rows,
notes) tables, as tables.py's."""
from .catalog import SHORT, TFLITE_FILE_BASE, TFLITE_FILE_KEYS
from .tables import cell, fmt_macs

TITLE = "Your .tflite files"


def fmt_equal(entry):
    """'equal/total' (and the share where not all), or why there is no comparison."""
    if entry is None:
        return "not run"
    if "error" in entry:
        return "error"
    eq, tot = entry["equal"], entry["total"]
    pct = 100 * eq / tot
    return f"{eq}/{tot}" if eq == tot else f"{eq}/{tot} ({pct:.1f}%)" if pct < 99.9 else \
        f"{eq}/{tot} ({pct:.3f}%)"


def fmt_diff(entry):
    if entry is None or "error" in entry:
        return ""
    d = entry["max_abs_diff"]
    return "0" if d == 0 else f"{d:g}"


def tflite_file_tables(files):
    """The tables of `files` (name -> results of kind "tflite")."""
    ran = {k: v for k, v in files.items() if not v.get("skipped")}
    skipped = {k: v for k, v in files.items() if v.get("skipped")}
    out = []
    if ran:
        out += timing_tables(ran) + [exactness_table(ran)]
    if skipped:
        out.append((f"{TITLE}: skipped (fixnet does not run them)", ["file", "fixnet's reason"],
                    [[name, res["skipped"]] for name, res in skipped.items()],
                    ["the whole of fixnet's message is in --json (skipped_detail)"]))
    return out


def timing_tables(ran):
    """One table per batch size any file was timed at: fixnet's time, XNNPACK's, and fixnet
    on the file / each TFLite interpreter on it."""
    batches = sorted({int(b) for res in ran.values()
                      for b in res["runners"][TFLITE_FILE_BASE]["batches"]})
    peers = [k for k in TFLITE_FILE_KEYS[1:] if any(k in res["runners"] for res in ran.values())]
    out = []
    for b in batches:
        timed = {k: v for k, v in ran.items()
                 if str(b) in v["runners"][TFLITE_FILE_BASE]["batches"]}
        header = (["file", "MACs/sample", "fixnet time", "XNNPACK time",
                   "fixnet GMAC/s"] + [f"{SHORT[TFLITE_FILE_BASE]} / {SHORT[k]}" for k in peers])
        rows = [[name, fmt_macs(res["macs_per_sample"]),
                 cell(res, TFLITE_FILE_BASE, b, "time"), cell(res, "tflite_xnnpack", b, "time"),
                 cell(res, TFLITE_FILE_BASE, b, "gmacs")]
                + [cell(res, k, b, "ratio") for k in peers] for name, res in timed.items()]
        notes = ["fixnet = fixnet.load of the file, qm.predict in the file's own input and "
                 "output types; the TFLite runners run the same file on the same inputs; "
                 "below 1: fixnet is faster; n/i = not installed",
                 "inputs: random codes of each input's type (seeded), floats uniform over a "
                 "float input's quantized range"]
        notes += [f"{name}: {res['batch_note']}" for name, res in ran.items()
                  if res.get("batch_note")]
        out.append((f"{TITLE}, batch {b}: fixnet time / TFLite time on the same file "
                    "(below 1: fixnet is faster)", header, rows, notes))
    return out


def exactness_table(ran):
    """fixnet's outputs against TFLite's on the same inputs, per file."""
    against = [k for k in ("tflite_ref", "tflite_xnnpack", "tflite_builtin")
               if any(k in res.get("exactness", {}) for res in ran.values())] \
        or ["tflite_ref", "tflite_xnnpack"]           # none ran: the columns say "not run"
    header = ["file", "inputs", "samples"] + [h for k in against
                                    for h in (f"= {SHORT[k]}", f"max diff {SHORT[k]}")]
    rows = [[name, ", ".join(res["inputs"]), str(res["accuracy_samples"])]
            + [c for k in against for c in (fmt_equal(res["exactness"].get(k)),
                                            fmt_diff(res["exactness"].get(k)))]
            for name, res in ran.items()]
    notes = ["values of fixnet's outputs equal to that TFLite runner's / all values, over every "
             "output, in the file's output type (codes for int8 / uint8 outputs, floats for "
             "float ones); max diff: the largest |difference| in those units; fixnet follows "
             "TFLite's reference kernels (TFLite ref) bit for bit, XNNPACK and the builtin "
             "kernels are shown for information (they may round differently)"]
    for name, res in ran.items():
        for k, e in res.get("exactness", {}).items():
            if "error" in e:
                notes.append(f"{name} against {SHORT[k]}: {e['error']}")
        for k, r in res["runners"].items():
            if r["status"] not in ("ok", "not installed"):
                notes.append(f"{name} {SHORT[k]}: {r['note']}")
    return (f"{TITLE}: fixnet's outputs against TFLite's on the same inputs", header, rows,
            notes)

