"""The report of a run as (title, header, rows, notes) tables, which the console and the Markdown
file both print: per batch size the models (fixtures, then the zoo), the layer benches, the
recurrent models, and int16 activations side by side with int8 (where those runners ran); then
the .tflite files given on --models (file_tables.py); and the number formats of their cells."""
from .catalog import (BASELINE, COUNTS_WITHIN_DB, INT8_KEYS, INT16_KEYS, SHORT, TFLITE_FILE_KIND,
                      TFLITE_FLOAT_KEYS, ZOO_KIND)
from .text import why as why_text

STAR = (f"`*` after a number: that runtime's SQNR is more than {COUNTS_WITHIN_DB:g} dB below "
        "the best deployment peer's (XNNPACK, TFLite builtin, ORT int8): a peer so marked "
        "does not count for the bars there; on fixnet it marks a model where fixnet is the "
        "less accurate")


def fmt_us(us):
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    return f"{us:.1f} us" if us >= 10 else f"{us:.2f} us"


def fmt_ratio(r):
    if r < 0.1:
        return f"{r:.2g}x"
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"


def fmt_macs(m):
    return f"{m / 1e6:.2f} M" if m >= 1e5 else f"{m / 1e3:.1f} k"


def fmt_pct(fraction):
    return "100%" if fraction == 1.0 else f"{100 * fraction:.1f}%"


def fmt_db(db):
    return "inf" if db == float("inf") else f"{db:.1f}"


def cell(res, key, batch, what):
    """A table cell for runner `key`: 'ratio' (fixnet / runner, * if it does not count),
    'gmacs', 'time', 'sqnr', 'time_ratio' or 'sqnr_top1' (the recurrent tables')."""
    r = res["runners"].get(key)
    if r is None:
        return ""
    if r["status"] != "ok":
        return ("n/i" if r["status"] == "not installed" else
                "no int8" if r["status"].startswith("no int8 .tflite") else "failed")
    st = r["batches"].get(str(batch))
    mark = "" if r.get("counts", True) else "*"
    if what == "ratio":
        if key == BASELINE:
            return "1"
        return fmt_ratio(st["fixnet_over"]) + mark if st and st["fixnet_over"] is not None else ""
    if what == "gmacs":
        return f"{st['gmacs']:.1f}" if st and st.get("gmacs") is not None else ""
    if what == "time":
        return fmt_us(st["median_us"]) if st else ""
    if what == "sqnr":
        return fmt_db(r["sqnr_db"]) + mark
    if what == "time_ratio":            # recurrent table: time, and fixnet / runner if known
        if not st:
            return ""
        if key == BASELINE or st["fixnet_over"] is None:
            return fmt_us(st["median_us"])
        return f"{fmt_us(st['median_us'])} ({fmt_ratio(st['fixnet_over'])}{mark})"
    if what == "sqnr_top1":
        top1 = r.get("top1_agree_keras")
        return fmt_db(r["sqnr_db"]) + mark + (f" / {fmt_pct(top1)}" if top1 is not None else "")
    raise ValueError(what)


def tables(results, keys, batches):
    """The report as (title, header, rows, notes) tables, shared by the console and Markdown."""
    from .file_tables import tflite_file_tables      # (it imports this module's cells)

    out = []
    files = {k: v for k, v in results["models"].items() if v["kind"] == TFLITE_FILE_KIND}
    models = {k: v for k, v in results["models"].items()
              if v["kind"] not in ("micro", "rnn", TFLITE_FILE_KIND)}
    # the fixtures (and .h5 paths) first, then the zoo of issue 17 in tables of its own
    groups = [("Models", {k: v for k, v in models.items() if v["kind"] != ZOO_KIND}),
              ("Zoo models (bench/zoo.py, issue 17)",
               {k: v for k, v in models.items() if v["kind"] == ZOO_KIND})]
    micro = {k: v for k, v in results["models"].items() if v["kind"] == "micro"}
    rnn = {k: v for k, v in results["models"].items() if v["kind"] == "rnn"}
    # columns: the runners that ran or were tried on some model (TFLite FLOAT: recurrent only;
    # the int16 runners: their own table)
    tried = [k for k in keys if any(k in res["runners"] for name, res in results["models"].items()
                                    if name not in files)]
    int16 = [k for k in tried if k in INT16_KEYS]
    keys = [k for k in tried if k not in INT16_KEYS]
    peers = [k for k in keys if k != BASELINE and k not in TFLITE_FLOAT_KEYS]
    int8 = [k for k in keys if k in INT8_KEYS]
    for b in batches:
        for what, group in groups:
            if group:
                out += model_tables(what, group, keys, peers, b)
        if micro:
            out += micro_tables(micro, results["machine"]["fixnet_isa"], peers, int8, b)
        if rnn:
            out += rnn_tables(rnn, keys, b)
        if int16:
            out += int16_tables(results["models"], b)
    if files:                       # their own batch sizes (a file may run at batch 1 only)
        out += tflite_file_tables(files)
    return out


def model_tables(what, group, keys, peers, batch):
    """The tables of one group of models (`what`: "Models" or the zoo's title) at one batch
    size: fixnet / peer time ratios, then SQNR and the peers' GMAC/s."""
    header = (["model", "MACs/sample", "fixnet time", "fixnet GMAC/s"]
              + [f"fixnet / {SHORT[k]}" for k in peers])
    rows = [[name, fmt_macs(res["macs_per_sample"]), cell(res, BASELINE, batch, "time"),
             cell(res, BASELINE, batch, "gmacs")] + [cell(res, k, batch, "ratio") for k in peers]
            for name, res in group.items()]
    notes = [STAR, "n/i = not installed"]
    if what != "Models":
        notes.append("zoo models: architecture-alike stand-ins for the Keras files of "
                     "issue 17, weights not trained on real data, synthetic inputs "
                     "(bench/zoo.py list)")
    out = [(f"{what}, batch {batch}: fixnet int8 time / peer time (below 1: fixnet is "
            "faster)", header, rows, notes)]
    header = (["model"] + [f"SQNR {SHORT[k]}" for k in keys]
              + [f"{SHORT[k]} GMAC/s" for k in peers])
    rows = [[name] + [cell(res, k, batch, "sqnr") for k in keys]
            + [cell(res, k, batch, "gmacs") for k in peers] for name, res in group.items()]
    n_acc = sorted({res["accuracy_samples"] for res in group.values()})
    out.append((f"{what}: output SQNR (dB) against Keras float on "
                f"{'/'.join(map(str, n_acc))} test samples, and the peers' "
                f"GMAC/s at batch {batch}", header, rows, [STAR]))
    return out


def micro_tables(micro, fixnet_isa, peers, int8, batch):
    """The layer benches' tables at one batch size: GMAC/s per runtime (and per fixnet kernel
    build timed in a child process), then fixnet / peer and the SQNR of the `int8` runners."""
    isas = sorted({i for res in micro.values() for i in res.get("fixnet_builds", {})})
    header = (["layer", "MACs", f"fixnet GMAC/s ({fixnet_isa})"]
              + [f"fixnet GMAC/s ({i})" for i in isas]
              + [f"{SHORT[k]} GMAC/s" for k in peers])
    rows = []
    for name, res in micro.items():
        fb = res.get("fixnet_builds", {})
        rows.append([name, fmt_macs(res["macs_per_sample"]), cell(res, BASELINE, batch, "gmacs")]
                    + [(f"{fb[i]['gmacs']:.1f}" + ("" if fb[i]["bit_identical"] else " (!)")
                        if i in fb and fb[i]["status"] == "ok" else
                        fb.get(i, {}).get("status", "")) for i in isas]
                    + [cell(res, k, batch, "gmacs") for k in peers])
    notes = [f"{name}: {res['what']}" for name, res in micro.items()]
    if isas:
        notes.append("fixnet GMAC/s (<build>): the same layer with FIXNET_ISA=<build>, "
                     "timed alone in a subprocess (not interleaved with the peers); "
                     "(!) = its int8 outputs differ from the main build's")
    out = [(f"Layer benches, batch {batch}: GMAC/s per runtime", header, rows, notes)]
    header = (["layer"] + [f"fixnet / {SHORT[k]}" for k in peers]
              + [f"SQNR {SHORT[k]}" for k in int8])
    rows = [[name] + [cell(res, k, batch, "ratio") for k in peers]
            + [cell(res, k, batch, "sqnr") for k in int8] for name, res in micro.items()]
    out.append((f"Layer benches, batch {batch}: fixnet int8 time / peer time, and output "
                "SQNR (dB) against Keras float", header, rows, [STAR]))
    return out


def rnn_tables(rnn, keys, batch):
    """The recurrent models' tables at one batch size: time per call of every runner (and
    fixnet / runner where fixnet int8 ran), then SQNR and top-1; notes say what failed and
    why, and which TFLite is float."""
    cols = [k for k in keys if any(k in res["runners"] for res in rnn.values())]
    header = ["model", "MACs/sample"] + [SHORT[k] for k in cols]
    rows = [[name, fmt_macs(res["macs_per_sample"]) if res["macs_per_sample"] else "?"]
            + [cell(res, k, batch, "time_ratio") for k in cols] for name, res in rnn.items()]
    notes = ["time = median per call; in parentheses fixnet int8 / that runner (below 1: fixnet "
             "is faster), where fixnet int8 ran",
             "TFLite FLOAT ...: a float .tflite converted at run time, timed where the fixture "
             "has no int8 .tflite (its converter failed); not a deployment peer of an int8 engine",
             "ORT int8 here: quantize_static QDQ of the Keras model (float in/out), the recurrent "
             "op itself stays float in ONNX Runtime",
             "no int8 = the fixture has no int8 .tflite; failed = see the notes below",
             f"`*`: that runtime's SQNR is more than {COUNTS_WITHIN_DB:g} dB below the best "
             "int8 deployment peer's (XNNPACK, TFLite builtin, ORT int8); on fixnet it marks a "
             "model where fixnet is the less accurate"]
    out = [(f"Recurrent models, batch {batch}: time per call", header, rows, notes)]
    header = ["model"] + [f"{SHORT[k]}" for k in cols]
    rows = [[name] + [cell(res, k, batch, "sqnr_top1") for k in cols]
            for name, res in rnn.items()]
    notes = ["SQNR (dB) against Keras float / top-1 agreement with Keras (classifiers); a "
             "model with several outputs (rnn_variants): the worst output's SQNR, top-1 of "
             "output 0"] + rnn_notes(rnn, cols)
    n_acc = "/".join(str(n) for n in sorted({res["accuracy_samples"] for res in rnn.values()}))
    out.append((f"Recurrent models: output SQNR (dB) against Keras float / top-1 agreement, "
                f"on {n_acc} test samples", header, rows, notes))
    return out


def rnn_notes(rnn, cols):
    """The recurrent SQNR table's notes per model: the SQNR of each output where there are
    several, then what failed and why (the fixture's converter, each runner)."""
    notes = []
    for name, res in rnn.items():
        multi = {SHORT[k]: r["sqnr_db_outputs"] for k, r in res["runners"].items()
                 if k in cols and r.get("sqnr_db_outputs")}
        if multi:
            notes.append(f"{name}, SQNR per output: " + "; ".join(
                f"{who} " + " / ".join(fmt_db(x) for x in v) for who, v in multi.items()))
    for name, res in rnn.items():
        failed = {}                   # why -> runners (the three TFLite kinds often share one)
        for k, r in res["runners"].items():
            if k in cols and r["status"] not in ("ok", "not installed") \
                    and not r["status"].startswith("no int8 .tflite"):
                failed.setdefault(why_text(r["note"], name), []).append(SHORT[k])
        why = [f"{', '.join(who)}: {text}" for text, who in failed.items()]
        if res.get("tflite_error"):
            why.insert(0, "no int8 .tflite, the fixture's converter failed: "
                          + why_text(res["tflite_error"], name))
        if why:
            notes.append(f"{name}: " + "; ".join(why))
    return notes


# the int16 table's runners, in its column order: each engine's int8, then its int16
INT16_SIDE = [BASELINE, "fixnet_int16", "tflite_xnnpack", "tflite_16x8"]


def time_ratio(res, num, den, batch):
    """median time of runner `num` / median time of runner `den` at `batch`, or ""."""
    t = []
    for k in (num, den):
        r = res["runners"].get(k)
        st = r["batches"].get(str(batch)) if r and r["status"] == "ok" else None
        if not st:
            return ""
        t.append(st["median_us"])
    return fmt_ratio(t[0] / t[1])


def int16_tables(models, batch):
    """int16 activations side by side with int8 (issue 19) at one batch size: per model where an
    int16 runner was tried, the time of fixnet int8, fixnet int16, XNNPACK int8 and TFLite
    16x8, the int16 / int8 ratio of each engine, fixnet int16 / TFLite 16x8, and the SQNR of
    the four."""
    group = {k: v for k, v in models.items() if any(i in v["runners"] for i in INT16_KEYS)}
    header = (["model"] + [SHORT[k] for k in INT16_SIDE]
              + ["fixnet int16 / int8", "TFLite 16x8 / XNNPACK int8", "fixnet int16 / TFLite 16x8"]
              + [f"SQNR {SHORT[k]}" for k in INT16_SIDE])
    rows = [[name] + [cell(res, k, batch, "time") for k in INT16_SIDE]
            + [time_ratio(res, "fixnet_int16", BASELINE, batch),
               time_ratio(res, "tflite_16x8", "tflite_xnnpack", batch),
               time_ratio(res, "fixnet_int16", "tflite_16x8", batch)]
            + [cell(res, k, batch, "sqnr") for k in INT16_SIDE] for name, res in group.items()]
    notes = ["time = median per call; ratios = ratios of those medians (below 1: the first is "
             "faster)",
             "fixnet int16: quantize(calib, activations='int16'), int16 codes in, codes out "
             "(int16, or int8 where the model's outputs stay int8); "
             "TFLite 16x8: converted at run time (models/make_tflite16x8_goldens.py's recipe, "
             "the same calibration data, int16 in and out), builtin kernels without a delegate "
             "(XNNPACK has no int16 kernels)",
             "SQNR (dB) against Keras float"] + int16_failures(group)
    return [(f"int16 activations beside int8, batch {batch}: time per call and output SQNR",
             header, rows, notes)]


def int16_failures(group):
    """The int16 table's notes on what did not run: per runner and reason, the models."""
    failed = {}
    for name, res in group.items():
        for k in INT16_SIDE:
            r = res["runners"].get(k)
            if r and r["status"] not in ("ok", "not installed") \
                    and not r["status"].startswith("no int8 .tflite"):
                failed.setdefault((SHORT[k], why_text(r["note"], name, 400)), []).append(name)
    return [f"{who} failed on {', '.join(names)}: {text}"
            for (who, text), names in failed.items()]
