#!/usr/bin/env python
"""Time fixnet against its peers on the same models, in one run, on one machine.

    python bench/peers.py                          # every CNN and MLP fixture + the layer benches
    python bench/peers.py --models 'resnet*' mlp_seq_k3 --micro none --rounds 100
    python bench/peers.py --quick                  # a smoke run (few rounds)
    python bench/peers.py --json r.json --markdown r.md   # the table bench/README.md keeps
    python bench/peers.py --models rnn --micro none --float   # the 20 recurrent fixtures
    python bench/peers.py --models mobilenetv2 resnet_small --micro none --int16  # int16 vs int8

The code is the package bench/peerbench/ (its __init__.py says what is timed and how, and
which module does what); this file only runs its command line. Run as a script, this folder is
first on sys.path, which is how `peerbench` is found.
"""
import sys

from peerbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
