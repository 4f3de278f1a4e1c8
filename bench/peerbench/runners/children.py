"""The child processes of a run: bench/peers.py again, in this Python, with a hidden option and
the path of a JSON spec. --fixnet-child times fixnet in another kernel build (FIXNET_ISA is
read when fixnet is imported); --tflite-float-child and --tflite-16x8-child convert a Keras
model to a float or a 16x8 .tflite (the converter kills its process on some recurrent models).
cli.main sends each to its entry point (runners/fixnet_runners.fixnet_child,
runners/tflite.tflite_float_child, runners/tflite.tflite_16x8_child)."""
import json
import pathlib
import subprocess
import sys

from ..catalog import LAUNCHER


def write_spec(path, spec):
    """Write a child's spec (a dict) as JSON to `path`; returns the path."""
    path = pathlib.Path(path)
    path.write_text(json.dumps(spec))
    return path


def read_spec(path):
    return json.loads(pathlib.Path(path).read_text())


def run_child(option, spec_path, env):
    """Run `bench/peers.py <option> <spec_path>` in this Python with `env`; the completed
    process, stdout and stderr as text."""
    return subprocess.run([sys.executable, str(LAUNCHER), option, str(spec_path)],
                          capture_output=True, text=True, env=env)
