"""The pinned fixture set (tests/conftest.py: ALL_FIXTURES, KERAS_ARCHIVES) is what models/
holds: every pinned fixture has its .h5 and .npz (a missing one fails here, by name, as well as
in every test that uses it), and every model in models/ is pinned (a new one must be added to
the list, so the parametrised tests pick it up)."""
import os

from conftest import ALL_FIXTURES, KERAS_ARCHIVES, MODELS, fixture_path


def test_every_pinned_fixture_has_its_h5_and_npz():
    missing = [fixture_path(n, ext) for n in ALL_FIXTURES for ext in (".h5", ".npz")
               if not os.path.isfile(fixture_path(n, ext))]
    missing += [fixture_path(n, ".keras") for n in sorted(KERAS_ARCHIVES)
                if not os.path.isfile(fixture_path(n, ".keras"))]
    assert not missing, f"pinned fixture files missing: {missing}"


def test_every_model_in_models_is_pinned():
    files = os.listdir(MODELS)
    h5 = {f[:-3] for f in files if f.endswith(".h5") and not f.endswith(".weights.h5")}
    keras = {f[:-6] for f in files if f.endswith(".keras")}
    assert h5 == set(ALL_FIXTURES), (f"not pinned: {sorted(h5 - set(ALL_FIXTURES))}; "
                                     f"pinned but absent: {sorted(set(ALL_FIXTURES) - h5)}")
    assert keras == KERAS_ARCHIVES, sorted(keras ^ KERAS_ARCHIVES)
    assert len(ALL_FIXTURES) == 74 and ALL_FIXTURES == tuple(sorted(set(ALL_FIXTURES)))


def test_top1_versus_peer_is_the_half_point_bar_then_the_sign_test():
    import numpy as np
    from conftest import top1_versus_peer
    truth = np.zeros(360, int)

    def run(only_ours, only_peer, both_wrong=0):
        ours, peer = truth.copy(), truth.copy()
        ours[:only_peer] = 1                              # only the peer right
        peer[only_peer:only_peer + only_ours] = 1         # only we are right
        k = only_peer + only_ours
        ours[k:k + both_wrong] = peer[k:k + both_wrong] = 2
        return top1_versus_peer(ours, peer, truth)

    assert run(0, 0)[0] and run(5, 0)[0]
    assert run(0, 1)[0]                     # 0.28 point below: within the 0.5 point bar
    assert run(0, 3)[0]                     # 0.83 point below; p = 1/8: not significant
    assert not run(0, 5)[0]                 # 1.4 points below; p = 1/32: fixnet worse
    assert not run(0, 10, both_wrong=20)[0]
    assert run(2, 8)[0] and not run(1, 9)[0]    # p = 0.055 / 0.011
    ok, msg = run(1, 9)
    assert "only ours right 1, only peer right 9" in msg and "p = 0.0107" in msg
