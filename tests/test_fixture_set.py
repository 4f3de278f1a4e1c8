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
