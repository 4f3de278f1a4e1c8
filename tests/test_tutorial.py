"""docs/tutorial.md prints what it shows: its step blocks run in order in one session and each
block's output equals the text block under it (tools/tutorial.py writes them; never by hand)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import tutorial  # noqa: E402


def test_the_tutorial_has_its_steps():
    with open(tutorial.TUTORIAL, encoding="utf-8") as f:
        text = f.read()
    steps = tutorial.blocks(text)
    assert len(steps) >= 8
    assert all(out.strip() for _, _, out in steps), "a step without its output: run --write"
    # the textbook example, shown with fixnet's own qparams function
    assert "[0, 96, 144, 192, 255]" in steps[0][2]


def test_every_step_prints_what_the_tutorial_shows():
    with open(tutorial.TUTORIAL, encoding="utf-8") as f:
        text = f.read()
    diff = tutorial.differences(text)
    assert not diff, ("docs/tutorial.md differs from what its steps print now "
                      "(python tools/tutorial.py --write):\n" + "\n".join(diff[:80]))
