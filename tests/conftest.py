import os
import shutil

import h5py
import numpy as np
import pytest

from fixnet.metrics import sqnr_db  # noqa: F401  (the tests' SQNR: fixnet's one definition)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "models")

# Every model fixture in models/: NAME.h5 (real Keras) with NAME.npz (inputs and goldens), for
# each family and both writers (k3: Keras 3, tfk2: tf.keras 2). Pinned by hand from
# `ls models/*.h5`, never read from the folder: a missing file fails the tests that use it
# (and tests/test_fixture_set.py), instead of silently shrinking a parametrisation.
FIXTURE_FAMILIES = (
    "anylen_conv", "anylen_strided", "anylen_two",
    "cnn_digits", "concat_branches", "dead_digits", "kws_conv1d", "kws_dscnn",
    "layers_activations", "layers_channels_first", "layers_conv1d", "layers_conv2d",
    "layers_depthwise", "layers_merge", "layers_mobilenetv3_small", "layers_noise_norm",
    "layers_padding_reshape", "layers_pooling", "layers_tensor_ops", "layers_upsampling",
    "layers_upsampling1d",
    "mlp_func", "mlp_seq", "mobilenet_small", "mobilenetv2", "multi_io", "resnet_small",
    "rnn_bilstm", "rnn_gru", "rnn_gru_ra0", "rnn_kws", "rnn_lstm", "rnn_sensor", "rnn_simplernn",
    "rnn_stacked", "rnn_text", "rnn_variants",
)
WRITERS = ("k3", "tfk2")
ALL_FIXTURES = tuple(sorted(f"{family}_{w}" for family in FIXTURE_FAMILIES for w in WRITERS))
# the fixtures also saved as a Keras 3 archive, NAME.keras
KERAS_ARCHIVES = frozenset({"cnn_digits_k3", "layers_tensor_ops_k3", "multi_io_k3"} | {
    f"rnn_{n}_k3" for n in ("bilstm", "gru", "gru_ra0", "kws", "lstm", "sensor", "simplernn",
                            "stacked", "text", "variants")})


def fixtures(prefixes=None, exclude=()):
    """The pinned fixtures whose name starts with one of `prefixes` (all if None), less those
    starting with one of `exclude`, sorted."""
    prefixes, exclude = (tuple(prefixes) if prefixes is not None else ("",)), tuple(exclude)
    out = [n for n in ALL_FIXTURES if n.startswith(prefixes) and not n.startswith(exclude)]
    assert out, f"no pinned fixture starts with {prefixes}"
    return out


FIXTURES = fixtures(["mlp_"])  # the MLPs


PEERS = os.path.join(ROOT, "bench", "peers.py")        # the command; its code: bench/peerbench/
BENCH = os.path.join(ROOT, "bench")


def peerbench(module):
    """The module `module` of bench/peerbench/ (bench/peers.py's code; it imports no peer
    runtime at import), imported as bench/peers.py imports it: as `peerbench.<module>`, with
    bench/ on sys.path only while the package is found."""
    import importlib
    import sys
    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module("peerbench." + module)
    finally:
        sys.path.remove(BENCH)


def fixture_path(name, ext=".h5"):
    return os.path.join(MODELS, name + ext)


def fixture_data(name):
    with np.load(fixture_path(name, ".npz")) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture
def copy_fixture(tmp_path):
    """Copy a fixture .h5 to tmp so a test can damage or edit it."""
    def make(name="mlp_func_tfk2", new_name=None):
        dst = tmp_path / ((new_name or name) + ".h5")
        shutil.copy(fixture_path(name), dst)
        return str(dst)
    return make


def edit_config(path, edit):
    """Rewrite the JSON model_config of an .h5 file in place with ``edit(dict) -> dict``."""
    import json
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        f.attrs["model_config"] = json.dumps(edit(cfg))


def by_index(d, key):
    """{i: array} of the fixture arrays stored as ``key`` ({0: it}: one tensor) or ``key_<i>``
    (several; an index may be missing, e.g. an output TFLite's model left out)."""
    if key in d:
        return {0: d[key]}
    prefix = key + "_"
    return {int(k[len(prefix):]): d[k] for k in d
            if k.startswith(prefix) and k[len(prefix):].isdigit()}


def as_list(d, key):
    """Fixture arrays stored as ``key`` (one tensor) or ``key_0, key_1, ...`` (several), in
    order. A gap in the indices is an error, never a shorter list: use by_index where
    arrays may be missing."""
    found = by_index(d, key)
    missing = sorted(set(range(max(found, default=-1) + 1)) - set(found))
    if missing:
        raise KeyError(f"{key}: indices {missing} missing (of {sorted(found)}); use by_index")
    return [found[i] for i in range(len(found))]


# Top-1 against a peer (TFLite int8): the bar is "no more than 0.5 point below the peer".
TOP1_MARGIN = 0.005
TOP1_ALPHA = 0.05


def top1_versus_peer(ours, peer, truth, margin=TOP1_MARGIN, alpha=TOP1_ALPHA):
    """Compare the top-1 classes `ours` and `peer` (a peer int8 engine's) on the same samples
    against `truth` (Keras float's top-1, or the labels). Returns (passed, message).

    The bar: our agreement with `truth` at most `margin` (0.5 point) below the peer's. Where
    the observed gap is wider, the samples decide with a paired, exact sign test (McNemar's):
    only the samples where exactly one of the two is right tell them apart; b where only we
    are right, c where only the peer is. If we were as good as the peer, each such sample is
    ours or theirs with probability 1/2; the check fails when P(X >= c), X ~ Binomial(b + c,
    1/2), is below `alpha` (5%), i.e. the samples show us worse than the peer, not chance
    (a gap of 0.5 point to 1.8 points on 360 samples with a handful of disagreements does not
    fail unless those disagreements go one way). No wider bar: a gap within 0.5 point passes
    outright, a wider one must not be significant on these very samples."""
    ours, peer, truth = (np.asarray(v).ravel() for v in (ours, peer, truth))
    assert len(ours) == len(peer) == len(truth) > 0
    ours_right, peer_right = ours == truth, peer == truth
    n = len(truth)
    b = int(np.sum(ours_right & ~peer_right))
    c = int(np.sum(~ours_right & peer_right))
    a_ours, a_peer = ours_right.mean(), peer_right.mean()
    msg = (f"top-1 {a_ours:.4f} vs peer {a_peer:.4f} on n={n} (only ours right {b}, "
           f"only peer right {c})")
    if (b - c) / n >= -margin:
        return True, msg + f": within {margin * 100:.1f} point"
    import math
    d = b + c
    p = sum(math.comb(d, k) for k in range(c, d + 1)) / 2.0 ** d
    return p >= alpha, msg + f": more than {margin * 100:.1f} point below; sign test p = {p:.4f} " \
                             f"({'not significant' if p >= alpha else 'significant'} at {alpha})"


def pytest_report_header(config):
    """Which fixnet is tested, which kernel builds it has, which this CPU runs, which is in use."""
    import fixnet
    import fixnet._kernels as k
    built = [n for n in k.ISA_PREFERENCE + ("baseline",) if k.is_built(n)]
    return [f"fixnet: {os.path.dirname(fixnet.__file__)}",
            f"fixnet kernel builds: built {', '.join(built)}; runnable here "
            f"{', '.join(k.available_builds())}; in use {k.ISA}"
            + (f" (FIXNET_ISA={os.environ['FIXNET_ISA']})" if os.environ.get("FIXNET_ISA") else "")]


# Known gaps against the issue bars, listed here so they stay visible (each with its entry in
# the README's known-gaps list). They run, and are reported as xfail/xpass; none is hidden.
KNOWN_GAPS = {}


def pytest_collection_modifyitems(config, items):
    for item in items:
        reason = KNOWN_GAPS.get(item.nodeid.split("/")[-1])
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))


# --- fuzz counts (tests/test_fuzz.py) --------------------------------------------------------------

def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the damaged-file campaigns' counts: cases, ok, FixnetError, crash, hang, other."""
    import sys
    fuzz = sys.modules.get("test_fuzz")
    if fuzz is None or not getattr(fuzz, "FUZZ_COUNTS", None):
        return
    tr = terminalreporter
    tr.section("fixnet fuzz: damaged and hostile model files")
    for name, info in fuzz.FUZZ_COUNTS.items():
        c = info["counts"]
        other = c["other"] + c["memory"] + c["unnamed_error"] + c["bad_output"] + c["harness"]
        tr.write_line(f"{name}: {info['cases']} cases in {info['seconds']:.1f} s: ok {c['ok']}, "
                      f"FixnetError {c['fixnet_error']}, crash {c['crash']}, hang {c['hang']}, "
                      f"other exceptions {c['other']} (of which from the quantizer "
                      f"{info['quantizer']}), MemoryError {c['memory']}, FixnetError not naming "
                      f"the file/layer {c['unnamed_error']}, wrong outputs {c['bad_output']}, "
                      f"harness errors {c['harness']}; failures {other + c['crash'] + c['hang']}")
        if info.get("checked"):
            tr.write_line("  ok cases checked for: " + "; ".join(
                f"{kind} {n}" for kind, n in sorted(info["checked"].items())))


def rewrite_fxn_manifest(src, dst, edit):
    """A copy of .fxn ``src`` with its manifest changed by ``edit`` and the checksum redone
    (a crafted file: the reader's own checks must refuse it)."""
    import hashlib
    import io
    import json
    import zipfile

    import fixnet.fxn
    data = open(src, "rb").read()
    head, payload = data[:fixnet.fxn.HEADER_SIZE], data[fixnet.fxn.HEADER_SIZE:]
    zin = zipfile.ZipFile(io.BytesIO(payload))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            raw = zin.read(info.filename)
            if info.filename == fixnet.fxn.MANIFEST_NAME:
                m = json.loads(raw)
                edit(m)
                raw = json.dumps(m).encode()
            zout.writestr(info, raw)
    payload = out.getvalue()
    magic, version, _, _ = fixnet.fxn.HEADER.unpack(head)
    with open(dst, "wb") as f:
        f.write(fixnet.fxn.HEADER.pack(magic, version, len(payload),
                                        hashlib.sha256(payload).digest()) + payload)
