"""How close each runner's output is to Keras float (SQNR, top-1 agreement), and the rule that
decides whether a peer counts for the bars: its SQNR within COUNTS_WITHIN_DB of the best
deployment peer's."""
import numpy as np

from fixnet.metrics import sqnr_db

from .catalog import COUNTS_WITHIN_DB, DEPLOY_PEERS, INT8_KEYS


def accuracy(runner, m):
    """(SQNR in dB against Keras float, top-1 agreement with Keras, the raw output, the SQNR
    of each output) on the accuracy samples.

    Several outputs (rnn_variants): the SQNR is the worst (lowest) of the outputs' SQNRs, each
    output's own in the list; top-1 is taken on output 0 (a classifier head there)."""
    raw = runner.calls[m.acc]()
    ys = runner.floats(raw)
    ys = ys if isinstance(ys, list) else [ys]
    if len(ys) != len(m.keras_outs):
        raise ValueError(f"{len(ys)} output(s), Keras has {len(m.keras_outs)}")
    per = [sqnr_db(k.reshape(m.acc, -1), np.asarray(y).reshape(m.acc, -1))
           for k, y in zip(m.keras_outs, ys)]
    y, ref = np.asarray(ys[0]).reshape(m.acc, -1), m.keras_outs[0].reshape(m.acc, -1)
    top1 = float(np.mean(y.argmax(axis=1) == ref.argmax(axis=1))) if ref.shape[1] > 1 else None
    return min(per), top1, raw, per


def apply_counting_rule(runners):
    """Mark each int8 runner: does it count (SQNR within COUNTS_WITHIN_DB of the best
    deployment peer's)? Returns the best deployment peer's SQNR (None if none ran)."""
    peers = [r["sqnr_db"] for k, r in runners.items()
             if k in DEPLOY_PEERS and r["status"] == "ok" and r.get("sqnr_db") is not None]
    best = max(peers) if peers else None
    for k, r in runners.items():
        if r["status"] != "ok" or k not in INT8_KEYS or best is None:
            continue
        r["counts"] = bool(r["sqnr_db"] >= best - COUNTS_WITHIN_DB)
    return best
