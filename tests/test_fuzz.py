"""Every damaged or hostile model file gives correct results or a FixnetError naming the file.

"Correct results" (fuzzcases.check_outputs; the counts say which check each "ok" case passed):
a .fxn with damaged bytes that still loads predicts the undamaged file's bits exactly; a crafted
.fxn (valid checksum) gives finite outputs and its kernels give its oracle's bits; a damaged
Keras file that loads gives int8 outputs within the suite's SQNR bar (20 dB) of its own float
path on the calibration samples, so a weight or config the quantizer misreads is caught.

Cases come from tests/fuzzcases.py (one integer seed each: truncations, flipped bytes, edited
configs, NaN/inf/huge/misshapen/mistyped/missing/extra weights, HDF5 external links, external
storage and virtual datasets, crafted .fxn files). They run in long-lived worker processes with an
address-space limit; a worker that dies (segfault, abort) or overruns the time bound is replaced
and its case counted as a crash or a hang. The counts are printed at the end of the session.

    python -m pytest tests/test_fuzz.py            # the default ~200 cases, < 60 s
    python -m pytest tests/test_fuzz.py -m fuzz    # the long campaign (FIXNET_FUZZ_CASES, 3000)
    python tests/fuzzcases.py [--small] SEED       # reproduce one case in this process
"""
import collections
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import fixnet
import fuzzcases

FIXNET_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fixnet.__file__)))

DEFAULT_CASES = 200
CASE_SECONDS = float(os.environ.get("FIXNET_FUZZ_CASE_SECONDS", 30))
OUTCOMES = ("ok", "fixnet_error", "crash", "hang", "memory", "other", "unnamed_error",
            "bad_output", "harness")
FAILURES = ("crash", "hang", "memory", "other", "unnamed_error", "bad_output", "harness")

# campaign name -> Counter of outcomes, printed by the pytest_terminal_summary hook in conftest
FUZZ_COUNTS = {}


class WorkerPool:
    """A few worker processes (``fuzzcases.py --worker``) running cases one at a time each.

    A worker answers one JSON line per case. One that exits without answering crashed on the
    case it was given; one that does not answer within ``case_seconds`` hangs on it (it is
    killed). Either way it is replaced by a fresh worker and the next cases go on."""

    def __init__(self, n_workers, case_seconds, workdir):
        self.n, self.case_seconds, self.workdir = n_workers, case_seconds, workdir
        self.workers = []
        self.started = 0

    def _spawn(self):
        k = self.started
        self.started += 1
        wd = os.path.join(self.workdir, f"w{k}")
        os.makedirs(wd, exist_ok=True)
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   FIXNET_MAX_MEMORY=str(fuzzcases.WORKER_MAX_MEMORY),
                   # the workers import the same fixnet as this test process (an installed
                   # package, or the checkout built in place)
                   PYTHONPATH=os.pathsep.join([FIXNET_PARENT, os.environ.get("PYTHONPATH", "")]))
        log = open(os.path.join(wd, "stderr.log"), "w+b")
        p = subprocess.Popen([sys.executable, os.path.abspath(fuzzcases.__file__), "--worker", wd],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                             cwd=fuzzcases.ROOT, env=env)
        w = {"proc": p, "log": log, "buf": b"", "case": None, "since": None, "ready": False}
        self.workers.append(w)
        return w

    @staticmethod
    def _log_tail(w, n=3000):
        try:
            w["log"].flush()
            w["log"].seek(0)
            return w["log"].read().decode("utf-8", "replace")[-n:]
        except (OSError, ValueError):
            return ""

    def _retire(self, w):
        self.workers.remove(w)
        if w["proc"].poll() is None:
            w["proc"].kill()
        w["proc"].wait()
        w["log"].close()

    def run(self, seeds, small_only, selftest=None):
        """Yield one result dict per seed (in completion order). ``selftest``: {seed: "crash" |
        "hang"} makes the worker do that instead of the case (to test the harness)."""
        selftest = selftest or {}
        todo = list(seeds)[::-1]
        while len(self.workers) < self.n:
            self._spawn()
        try:
            while todo or any(w["case"] is not None for w in self.workers):
                for w in list(self.workers):
                    if w["ready"] and w["case"] is None and todo:
                        seed = todo.pop()
                        w["case"], w["since"] = seed, time.monotonic()
                        try:
                            req = {"seed": seed, "small_only": small_only, "selftest": selftest.get(seed)}
                            w["proc"].stdin.write((json.dumps(req) + "\n").encode())
                            w["proc"].stdin.flush()
                        except (BrokenPipeError, OSError):
                            pass                # it died; noticed below
                fds = {w["proc"].stdout.fileno(): w for w in self.workers}
                ready, _, _ = select.select(list(fds), [], [], 0.2)
                for fd in ready:
                    w = fds[fd]
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:            # EOF: the worker died
                        yield from self._died(w, small_only)
                        continue
                    w["buf"] += chunk
                    while b"\n" in w["buf"]:
                        line, w["buf"] = w["buf"].split(b"\n", 1)
                        msg = json.loads(line)
                        if "ready" in msg:
                            w["ready"] = True
                            continue
                        w["case"] = None
                        yield msg
                now = time.monotonic()
                for w in list(self.workers):
                    if w["case"] is not None and now - w["since"] > self.case_seconds:
                        seed = w["case"]
                        fixture, fmt, mname = fuzzcases.case_for_seed(seed, small_only)
                        tail = self._log_tail(w)
                        self._retire(w)
                        self._spawn()
                        yield {"seed": seed, "fixture": fixture, "format": fmt, "mutation": mname,
                               "outcome": "hang",
                               "error": f"no answer within {self.case_seconds:.0f} s",
                               "log": tail}
                    elif w["case"] is None and not w["ready"] and now - w.setdefault("born", now) > 120:
                        raise RuntimeError(f"a fuzz worker did not start:\n{self._log_tail(w)}")
        finally:
            for w in list(self.workers):
                self._retire(w)

    def _died(self, w, small_only):
        seed = w["case"]
        code = w["proc"].wait()
        tail = self._log_tail(w)
        self._retire(w)
        if seed is None:
            raise RuntimeError(f"a fuzz worker died before any case (exit {code}):\n{tail}")
        self._spawn()
        fixture, fmt, mname = fuzzcases.case_for_seed(seed, small_only)
        yield {"seed": seed, "fixture": fixture, "format": fmt, "mutation": mname,
               "outcome": "crash", "error": _exit_reason(code), "log": tail}


def _exit_reason(code):
    import signal
    if code < 0:
        try:
            return f"worker killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"worker killed by signal {-code}"
    return f"worker exited with status {code}"


def describe_failure(r, small_only):
    flag = " --small" if small_only else ""
    lines = [f"seed {r['seed']}: {r['outcome']} — {r.get('mutation')} on {r.get('fixture')} "
             f"({r.get('format')}): {r.get('what', '')}",
             f"  error: {r.get('error')}" + (f" ({r['why']})" if r.get("why") else ""),
             f"  reproduce: python tests/fuzzcases.py{flag} {r['seed']}"]
    if r.get("stage"):
        lines.append(f"  stage: {r['stage']}" + (f", raised at fixnet/{r['frame']}" if r.get("frame") else ""))
    if r.get("quantizer"):
        lines.append("  (inside the quantizer: fixnet/quant/ or an op's quantize())")
    if r.get("traceback"):
        lines.append("  " + r["traceback"].strip().replace("\n", "\n  ")[-2500:])
    if r.get("log"):
        lines.append("  worker stderr (tail):\n  " + r["log"].strip().replace("\n", "\n  ")[-2500:])
    return "\n".join(lines)


# what an "ok" case was checked for (fuzzcases.check_outputs), by kind
CHECK_KINDS = {"the same bits as the undamaged .fxn": "same bits as the undamaged .fxn",
               "finite outputs, kernels bit-exact with the oracle": "crafted .fxn: kernels == oracle",
               "int8 within": "Keras file: int8 within the SQNR bar of its float path",
               "a weight of": "Keras file with a weight beyond EXTREME_WEIGHT: kernels == oracle",
               "a .tflite that loaded": "damaged .tflite: kernels == oracle"}


def _check_kind(r):
    what = r.get("checked") or ""
    kinds = [k for p, k in CHECK_KINDS.items() if what.startswith(p)]
    assert len(kinds) == 1, f"seed {r['seed']}: 'ok' without a known check: {what!r}"
    return kinds[0]


def campaign(name, seeds, small_only, n_workers=2):
    workdir = tempfile.mkdtemp(prefix="fixnet-fuzz-")
    counts = collections.Counter({k: 0 for k in OUTCOMES})
    by_mutation = collections.defaultdict(collections.Counter)
    checked = collections.Counter()       # what the "ok" cases were checked for
    failures = []
    t0 = time.monotonic()
    try:
        pool = WorkerPool(n_workers, CASE_SECONDS, workdir)
        for r in pool.run(seeds, small_only):
            counts[r["outcome"]] += 1
            by_mutation[r["mutation"]][r["outcome"]] += 1
            if r["outcome"] == "ok":
                checked[_check_kind(r)] += 1
            if r["outcome"] in FAILURES:
                failures.append(r)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    FUZZ_COUNTS[name] = {"counts": counts, "cases": len(seeds), "seconds": time.monotonic() - t0,
                         "by_mutation": by_mutation, "checked": checked,
                         "quantizer": sum(1 for r in failures if r.get("quantizer"))}
    return counts, failures


def _check(name, seeds, small_only):
    counts, failures = campaign(name, seeds, small_only)
    assert sum(counts.values()) == len(seeds)
    failures.sort(key=lambda r: r["seed"])
    report = "\n\n".join(describe_failure(r, small_only) for r in failures[:25])
    summary = ", ".join(f"{k} {counts[k]}" for k in OUTCOMES)
    assert not failures, (f"{len(failures)} of {len(seeds)} damaged files were not handled "
                          f"({summary}):\n\n{report}")
    # the campaign must exercise both sides: files that still work, and files refused; and
    # the Keras files that load must have been checked against their own float path
    assert counts["fixnet_error"] > 0 and counts["ok"] > 0, summary
    checked = FUZZ_COUNTS[name]["checked"]
    assert sum(checked.values()) == counts["ok"]
    # (a .fxn with damaged bytes almost never loads: its checksum refuses it; the check of one
    # that does is tested below, test_the_ok_checks_catch_wrong_outputs)
    assert checked[CHECK_KINDS["int8 within"]] > 0, f"ok cases checked for: {dict(checked)}"
    # damaged .tflite files went through the whole path (fixnet.load, predict) too
    tfl = FUZZ_COUNTS[name]["by_mutation"]["tflite_field"]
    assert tfl["fixnet_error"] > 0, f"tflite_field cases: {dict(tfl)}"


def test_the_keras_check_uses_the_suites_sqnr_bar():
    from test_model_fixtures import FLOAT_SQNR_BAR
    assert fuzzcases.SQNR_BAR == FLOAT_SQNR_BAR


def _sabotage(qm):
    """Move one output channel's int32 bias of the last weighted step far off (what a misread
    weight would do), before any predict."""
    s = [s for s in qm.steps if getattr(s, "bias", None) is not None][-1]
    bias = s.bias.copy()
    bias[0] += 1 << 20
    s.bias = bias
    return qm


def test_the_ok_checks_catch_wrong_outputs(tmp_path, monkeypatch):
    """fuzzcases.check_outputs, the meaning of "ok": passes the undamaged model, fails one
    whose integers changed: a damaged .fxn against the undamaged file's bits, a crafted .fxn
    against its oracle (the oracle sees the same change: it passes), a Keras model against its
    own float path."""
    import fixnet
    monkeypatch.setattr(fuzzcases, "_FXN_DIR", str(tmp_path))
    monkeypatch.setattr(fuzzcases, "_FXN_CACHE", {})
    monkeypatch.setattr(fuzzcases, "_BASE_OUT", {})
    name = "mlp_seq_k3"
    x = fuzzcases._one(fuzzcases.fixture_inputs(name)["x_test"])

    def check(qm, m, fmt, mutation):
        return fuzzcases.check_outputs(qm, m, name, fmt, mutation, fuzzcases._list(qm.predict(x)))

    base = fuzzcases.base_fxn(name)
    assert check(fixnet.load(base), None, "fxn", "flip_bits") == (True, "the same bits as the undamaged .fxn")
    ok, why = check(_sabotage(fixnet.load(base)), None, "fxn", "flip_bits")
    assert not ok and "predicts otherwise than the undamaged file" in why
    assert check(_sabotage(fixnet.load(base)), None, "fxn", "fxn_array")[0]

    m = fixnet.load(os.path.join(fuzzcases.MODELS, name + ".h5"))
    calib = fuzzcases._one(fuzzcases.fixture_inputs(name)["x_calib"])
    ok, why = check(m.quantize(calib, method="minmax", progress=False), m, "h5", "weight_values")
    assert ok and why.startswith("int8 within"), why
    ok, why = check(_sabotage(m.quantize(calib, method="minmax", progress=False)), m, "h5",
                    "weight_values")
    assert not ok and "below 20.0 dB" in why, why


def test_damaged_files_give_results_or_a_fixnet_error():
    """~200 cases over every mutation kind (each several times), mostly on small fixtures."""
    _check("default", range(DEFAULT_CASES), small_only=True)


@pytest.mark.fuzz
def test_damaged_files_campaign():
    """The long campaign: FIXNET_FUZZ_CASES (default 3000) cases from FIXNET_FUZZ_SEED (default
    1000000), over every fixture target."""
    n = int(os.environ.get("FIXNET_FUZZ_CASES", 3000))
    start = int(os.environ.get("FIXNET_FUZZ_SEED", 1_000_000))
    _check("campaign", range(start, start + n), small_only=False)


def test_a_worker_crash_and_a_hang_are_caught_and_counted(tmp_path):
    """The harness itself: a worker that dies on a case (SIGSEGV) counts it as a crash, one that
    never answers as a hang, and the cases after them still run, in fresh workers."""
    pool = WorkerPool(1, 2.0, str(tmp_path))
    results = list(pool.run([0, 1, 2, 3], small_only=True, selftest={1: "crash", 2: "hang"}))
    outcomes = {r["seed"]: r["outcome"] for r in results}
    assert outcomes[1] == "crash" and "SIG" in results[1]["error"] + results[1]["log"]
    assert outcomes[2] == "hang"
    assert outcomes[0] not in ("crash", "hang") and outcomes[3] not in ("crash", "hang")
    assert pool.started == 3


# --- the guarantees the campaign relies on, one by one ------------------------------------------

def _copy(tmp_path, name="mlp_seq_tfk2"):
    dst = tmp_path / f"{name}.h5"
    shutil.copy(os.path.join(fuzzcases.MODELS, name + ".h5"), dst)
    return str(dst)


KERNEL = "model_weights/dense_1/dense_1/kernel:0"      # in mlp_seq_tfk2.h5: Dense(64 -> 32)


def test_a_model_beyond_the_memory_limit_is_refused_before_reading(tmp_path, monkeypatch):
    import h5py
    import numpy as np
    import fixnet
    p = _copy(tmp_path)
    fixnet.load(p)                                               # 4 GiB default: loads
    with pytest.raises(fixnet.ModelFileError, match=r"mlp_seq_tfk2\.h5: .*memory limit of 20 KiB"):
        fixnet.load(p, max_memory="20K")
    monkeypatch.setenv("FIXNET_MAX_MEMORY", "20K")
    with pytest.raises(fixnet.ModelFileError, match="memory limit of 20 KiB"):
        fixnet.load(p)
    assert fixnet.load(p, max_memory=1 << 30).name            # the argument wins
    monkeypatch.setenv("FIXNET_MAX_MEMORY", "lots")
    with pytest.raises(fixnet.FixnetError, match="FIXNET_MAX_MEMORY"):
        fixnet.load(p)
    monkeypatch.delenv("FIXNET_MAX_MEMORY")
    # a weight declared with 2^34 elements and nothing stored: refused from its declared shape,
    # naming the layer and the dataset, without allocating (this process would need 64 GiB)
    with h5py.File(p, "r+") as f:
        del f[KERNEL]
        f.create_dataset(KERNEL, shape=(1 << 17, 1 << 17), dtype="f4", chunks=(64, 64))
    with pytest.raises(fixnet.ModelFileError,
                       match=r"layer 'dense_1' \(Dense\).*kernel.*declared shape \(131072, 131072\)"):
        fixnet.load(p)


def test_an_input_shape_beyond_the_memory_limit_is_refused(tmp_path):
    import fixnet
    from conftest import edit_config
    p = _copy(tmp_path, "cnn_digits_tfk2")

    def big_input(cfg):
        for l in cfg["config"]["layers"]:
            if "batch_input_shape" in l["config"]:
                l["config"]["batch_input_shape"] = [None, 40000, 40000, 1]
        return cfg
    edit_config(p, big_input)
    with pytest.raises(fixnet.ModelFileError, match=r"cnn_digits_tfk2\.h5: .*\(40000, 40000, 1\)"):
        fixnet.load(p)


@pytest.mark.parametrize("kind", ["external_link", "soft_link", "external_storage", "virtual"])
def test_data_outside_the_file_is_refused(tmp_path, kind):
    import h5py
    import numpy as np
    import fixnet
    p = _copy(tmp_path)
    outside = str(tmp_path / "outside.h5")
    with h5py.File(p, "r") as f:
        w = np.array(f[KERNEL])
    with h5py.File(outside, "w") as g:
        g["w"] = w
    with h5py.File(p, "r+") as f:
        del f[KERNEL]
        if kind == "external_link":
            f[KERNEL] = h5py.ExternalLink(outside, "/w")
        elif kind == "soft_link":
            f[KERNEL] = h5py.SoftLink("/model_weights/dense/dense/kernel:0")
        elif kind == "external_storage":
            raw = tmp_path / "raw.bin"
            raw.write_bytes(w.astype("<f4").tobytes())
            f.create_dataset(KERNEL, shape=w.shape, dtype="<f4", external=[(str(raw), 0, w.nbytes)])
        else:
            layout = h5py.VirtualLayout(shape=w.shape, dtype="f4")
            layout[...] = h5py.VirtualSource(outside, "w", shape=w.shape)
            f.create_virtual_dataset(KERNEL, layout)
    # each of them would give the right weights if followed: fixnet refuses to follow
    words = {"external_link": "external link", "soft_link": "soft link",
             "external_storage": "external file", "virtual": "virtual dataset"}[kind]
    with pytest.raises(fixnet.ModelFileError, match=rf"mlp_seq_tfk2\.h5: layer 'dense_1'.*{words}"):
        fixnet.load(p)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_at_load_naming_layer_and_weight(tmp_path, value):
    import h5py
    import fixnet
    p = _copy(tmp_path)
    with h5py.File(p, "r+") as f:
        f[KERNEL][3, 5] = value
    with pytest.raises(fixnet.ModelFileError,
                       match=r"mlp_seq_tfk2\.h5: layer 'dense_1' \(Dense\): weight 'dense_1/kernel:0'"
                             r".*NaN, infinite"):
        fixnet.load(p)


@pytest.mark.parametrize("dtype,loads", [("float16", True), ("float64", True), ("int32", True),
                                          ("S4", False), ("complex64", False)])
def test_weight_dtypes_are_converted_or_refused(tmp_path, dtype, loads):
    import h5py
    import numpy as np
    import fixnet
    p = _copy(tmp_path)
    with h5py.File(p, "r+") as f:
        w = np.array(f[KERNEL])
        del f[KERNEL]
        f[KERNEL] = (w * 100).astype(dtype) if dtype != "S4" else np.full(w.shape, b"0.5", "S4")
    if loads:
        m = fixnet.load(p)
        k = next(n for n in m.graph.nodes if n.layer == "dense_1").weights["kernel"]
        assert k.dtype == np.float32
        np.testing.assert_array_equal(k, (w * 100).astype(dtype).astype(np.float32))
    else:
        with pytest.raises(fixnet.ModelFileError, match=r"layer 'dense_1'.*not real numbers"):
            fixnet.load(p)


def test_a_cycle_in_the_graph_is_refused(tmp_path):
    import fixnet
    from conftest import edit_config
    p = _copy(tmp_path, "mlp_func_tfk2")

    def cycle(cfg):
        for l in cfg["config"]["layers"]:
            if l["name"] == "dense":             # dense reads from the layer after it
                l["inbound_nodes"] = [[["dropout", 0, 0, {}]]]
        return cfg
    edit_config(p, cycle)
    with pytest.raises(fixnet.ModelFileError, match=r"mlp_func_tfk2\.h5: .*cycle.*dense"):
        fixnet.load(p)


def test_an_fxn_file_beyond_the_memory_limit_is_refused(tmp_path):
    import numpy as np
    import fixnet
    d = fuzzcases.fixture_inputs("mlp_seq_k3")
    qm = fixnet.load(os.path.join(fuzzcases.MODELS, "mlp_seq_k3.h5")).quantize(
        d["x_calib"][0], weight_rounding="nearest", progress=False)
    p = str(tmp_path / "m.fxn")
    qm.save(p)
    x = d["x_test"][0]
    np.testing.assert_array_equal(fixnet.load(p).predict(x), qm.predict(x))
    with pytest.raises(fixnet.ModelFileError, match=r"m\.fxn: .*memory limit of 4 KiB"):
        fixnet.load(p, max_memory=4096)


def test_a_crafted_fxn_with_a_contradicting_tensor_shape_is_refused(tmp_path, monkeypatch):
    """Found by the long campaign (seed 1000266): a manifest whose intermediate tensor shape
    contradicts the step making it (mlp_func_tfk2's 'activation', (48,), declared [48, 1])
    loaded; predict() ignored the shape and predict_oracle() raised a bare ValueError. The
    loader now runs each step's oracle beside its kernel on the check input and refuses a
    file where they disagree."""
    import fixnet
    monkeypatch.setattr(fuzzcases, "_FXN_DIR", str(tmp_path))
    monkeypatch.setattr(fuzzcases, "_FXN_CACHE", {})
    name = "mlp_func_tfk2"
    p = str(tmp_path / "crafted.fxn")
    shutil.copy(fuzzcases.base_fxn(name), p)

    def edit(entries):
        m = json.loads(entries["manifest.json"])
        (t,) = [t for t in m["tensors"] if t["name"] == "activation"]
        assert t["shape"] == [48]
        t["shape"] = [48, 1]
        entries["manifest.json"] = json.dumps(m).encode()
    fuzzcases._fxn_edit_archive(p, edit)
    with pytest.raises(fixnet.ModelFileError,
                       match=r"crafted\.fxn: inconsistent .*(its kernel and its oracle "
                             r"disagree|does not fit its tensors)"):
        fixnet.load(p)
