"""The bars a run is judged by: issue 9's "Done when" on the CNN and MLP fixtures (and the 3x3
conv layer bench), issue 17's on the zoo models; and the summary of the .tflite files given on
--models (fixnet on the file / XNNPACK on it, and whether fixnet's outputs are TFLite's
reference kernels'). Each is a list of (holds, text) lines and the numbers behind them."""
import math
import statistics

from .catalog import (BASELINE, CONV3X3_BAR_GMACS, FIXTURE_KINDS, SHORT, TFLITE_FILE_KIND,
                      ZOO_KIND)

# results key -> the title of its bars in the report
VERDICT_TITLES = [("verdicts", 'Issue 9, "Done when"'),
                  ("verdicts_issue17", "Issue 17's bars, on the zoo models"),
                  ("verdicts_tflite_files", "Your .tflite files")]


def ratio(res, key, batch=1):
    """fixnet / runner `key` of one model's results at `batch`, or None where it did not run."""
    r = res["runners"].get(key)
    if not r or r["status"] != "ok" or str(batch) not in r["batches"]:
        return None
    return r["batches"][str(batch)]["fixnet_over"]


def set_verdicts(results):
    """The bars of this run (or of a saved --json, with this version's rules) at batch 1:
    issue 9's where fixtures or layer benches ran, issue 17's where zoo models ran."""
    kinds = {v["kind"] for v in results["models"].values()}
    at_1 = 1 in results["settings"]["batches"]
    results["verdicts"] = (verdicts(results)
                           if at_1 and kinds & set(FIXTURE_KINDS + ("micro",)) else None)
    results["verdicts_issue17"] = verdicts_issue17(results) if at_1 else None
    results["verdicts_tflite_files"] = verdicts_tflite_files(results)


def verdicts(results, batch=1):
    """Issue 9's "Done when" bars, from the CNN and MLP fixtures (not the layer benches, not
    the recurrent models: issue 11's, not the zoo: issue 17's) at `batch`."""
    models = {k: v for k, v in results["models"].items() if v["kind"] in FIXTURE_KINDS}
    out = bars(models, batch, ("tflite_builtin", "ort_int8"))
    lines = out["lines"]
    conv = results["models"].get("conv3x3")
    if conv is not None:
        g = None
        if results["machine"]["fixnet_isa"] == "avx2":
            g = conv["runners"][BASELINE]["batches"].get(str(batch), {}).get("gmacs")
        else:
            r = conv.get("fixnet_builds", {}).get("avx2")
            g = r.get("gmacs") if r and r["status"] == "ok" else None
        out["conv3x3_avx2_gmacs"] = g
        lines.append((g is not None and g > CONV3X3_BAR_GMACS,
                      f"3x3 conv layer bench on the AVX2 build > {CONV3X3_BAR_GMACS:.0f} GMAC/s: "
                      + (f"{g:.1f} GMAC/s -> {'yes' if g > CONV3X3_BAR_GMACS else 'NO'}"
                         if g is not None else "not measured (no avx2 build here)")))
    out["lines"] = [(bool(ok), text) for ok, text in lines]
    return out


def verdicts_issue17(results, batch=1):
    """Issue 17's bars, from the zoo models (bench/zoo.py: stand-ins for the Keras files the
    issue timed) at `batch`: fixnet <= TFLite builtin on every model, geometric mean of
    fixnet / XNNPACK <= 1, no model above 1.25x XNNPACK (a peer more than 1 dB less accurate
    than the best deployment peer does not count, as for issue 9). None without zoo models."""
    models = {k: v for k, v in results["models"].items() if v["kind"] == ZOO_KIND}
    if not models:
        return None
    out = bars(models, batch, ("tflite_builtin",))
    out["models"] = list(models)
    return out


def counted(res, key):
    """Does runner `key` count on this model (it ran, and passed the counting rule)?"""
    r = res["runners"].get(key)
    return r is not None and r["status"] == "ok" and r.get("counts", False)


def bars(models, batch, slower_than):
    """The bars shared by issues 9 and 17 over `models` (name -> result): fixnet <= each peer
    of `slower_than` on every model where that peer counts; the geometric mean of fixnet /
    XNNPACK <= 1 and no model above 1.25x XNNPACK; and (not a bar) fixnet's SQNR within 1 dB
    of the best peer's. Returns a dict with "lines": [(holds, text)] and the numbers."""
    lines, out = [], {}
    for key in slower_than:
        out[key], line = _no_slower_than(models, batch, key)
        lines.append(line)
    xnnpack, xnn_lines = _against_xnnpack(models, batch)
    if xnnpack is not None:
        out["xnnpack"] = xnnpack
        lines += xnn_lines
    worse = [f"{name} {res['runners'][BASELINE]['sqnr_db']:.1f} dB vs "
             f"{res['best_peer_sqnr_db']:.1f}" for name, res in models.items()
             if res.get("best_peer_sqnr_db") is not None
             and not res["runners"][BASELINE].get("counts", True)]
    lines.append((not worse, "fixnet's SQNR no more than 1 dB below the best peer's on every "
                             "model (not one of the issue's bars; the same rule for fixnet): "
                  + ("yes" if not worse else f"NO on {len(worse)}: {', '.join(worse)}")))
    out["fixnet_less_accurate"] = worse
    out["lines"] = [(bool(ok), text) for ok, text in lines]
    return out


def _no_slower_than(models, batch, key):
    """fixnet <= peer `key` on every model where it counts: (its numbers, (holds, text))."""
    slower, skipped, checked = [], [], 0
    for name, res in models.items():
        r = ratio(res, key, batch)
        if r is None:
            continue
        if not counted(res, key):
            skipped.append(name)
            continue
        checked += 1
        if r > 1.0:
            slower.append(f"{name} {r:.2f}x")
    ok = checked > 0 and not slower
    text = (f"fixnet <= {SHORT[key]} on every model where it counts: "
            + ("yes" if ok else "NO" if checked else "not measured")
            + (f" (slower on {len(slower)}/{checked}: {', '.join(slower)})"
               if slower else f" ({checked} models)" if checked else "")
            + (f"; does not count on {', '.join(skipped)}" if skipped else ""))
    return {"holds": ok, "checked": checked, "slower": slower, "not_counted": skipped}, (ok, text)


def _against_xnnpack(models, batch):
    """The geometric mean of fixnet / XNNPACK <= 1 and no model above 1.25x, over the models
    where XNNPACK counts: (its numbers, [(holds, text)]), or (None, []) where none."""
    xs = {name: ratio(res, "tflite_xnnpack", batch) for name, res in models.items()
          if ratio(res, "tflite_xnnpack", batch) is not None and counted(res, "tflite_xnnpack")}
    not_counted = [name for name, res in models.items()
                   if ratio(res, "tflite_xnnpack", batch) is not None
                   and not counted(res, "tflite_xnnpack")]
    if not xs:
        return None, []
    geo = math.exp(statistics.fmean(math.log(v) for v in xs.values()))
    worst = max(xs, key=xs.get)
    above = [f"{n} {v:.2f}x" for n, v in xs.items() if v > 1.25]
    numbers = {"geomean": geo, "worst_model": worst, "worst": xs[worst],
               "models": len(xs), "above_1.25": above, "not_counted": not_counted}
    lines = [(geo <= 1.0, f"geometric mean of fixnet / XNNPACK over {len(xs)} models "
                          f"<= 1: {geo:.2f}x -> {'yes' if geo <= 1 else 'NO'}"
              + (f" (XNNPACK does not count on {', '.join(not_counted)})"
                 if not_counted else "")),
             (not above, f"no model above 1.25x XNNPACK: worst {worst} {xs[worst]:.2f}x"
                         f" -> {'yes' if not above else 'NO'}"
              + (f" ({len(above)} above: {', '.join(above)})" if above else ""))]
    return numbers, lines


def verdicts_tflite_files(results, batch=1):
    """The .tflite files given on --models: fixnet's outputs equal to TFLite's reference
    kernels' on every file fixnet runs; fixnet on the file / XNNPACK on it at `batch` per
    file, their geometric mean <= 1 and none above 1.25x (issue 17's bars, as a yardstick);
    the files skipped (listed, no line: the report's table of skipped files says why). None
    without such files."""
    files = {k: v for k, v in results["models"].items() if v["kind"] == TFLITE_FILE_KIND}
    if not files:
        return None
    ran = {k: v for k, v in files.items() if not v.get("skipped")}
    lines, out = [], {"files": list(files), "skipped": [k for k in files if k not in ran]}
    checked = {k: v["exactness"]["tflite_ref"] for k, v in ran.items()
               if "tflite_ref" in v.get("exactness", {})
               and "error" not in v["exactness"]["tflite_ref"]}
    differ = [f"{k} {e['equal']}/{e['total']} (max |diff| {e['max_abs_diff']:g})"
              for k, e in checked.items() if e["equal"] != e["total"]]
    unchecked = [k for k in ran if k not in checked]
    out["exact_vs_ref"], out["differ_from_ref"] = list(checked), differ
    lines.append((bool(checked) and not differ,
                  f"fixnet's outputs equal TFLite reference kernels' on every file: "
                  + ("not measured" if not checked else "yes" if not differ else "NO")
                  + (f" ({len(checked)} files)" if checked and not differ else "")
                  + (f" (differ on {len(differ)}/{len(checked)}: {', '.join(differ)})"
                     if differ else "")
                  + (f"; not compared on {', '.join(unchecked)}" if unchecked else "")))
    ratios = {k: ratio(v, "tflite_xnnpack", batch) for k, v in ran.items()}
    ratios = {k: r for k, r in ratios.items() if r is not None}
    out["fixnet_over_xnnpack"] = ratios
    if ratios:
        geo = math.exp(statistics.fmean(math.log(v) for v in ratios.values()))
        above = [f"{n} {v:.2f}x" for n, v in ratios.items() if v > 1.25]
        out.update({"geomean": geo, "above_1.25": above})
        each = ", ".join(f"{n} {v:.2f}x" for n, v in ratios.items())
        lines.append((geo <= 1.0, f"fixnet .tflite / XNNPACK at batch {batch}, geometric mean "
                                  f"over {len(ratios)} files <= 1: {geo:.2f}x -> "
                                  f"{'yes' if geo <= 1 else 'NO'} ({each})"))
        lines.append((not above, "no file above 1.25x XNNPACK: "
                      + ("yes" if not above else f"NO ({', '.join(above)})")))
    else:
        lines.append((False, f"fixnet .tflite / XNNPACK at batch {batch}: not measured"))
    out["lines"] = [(bool(ok), text) for ok, text in lines]
    return out
