"""`fixnet info`: how fixnet reads a Keras file (layers, shapes, MACs); --system: the kernel
build, the CPU."""
import sys

from .common import system_info

HELP = "show how fixnet reads a Keras file (layers, shapes, MACs); --system: the kernel build, the CPU"
EXAMPLE = """fixnet info model.h5
  fixnet info --system"""


def add_arguments(p):
    p.add_argument("model", nargs="?", help="a Keras .h5 or .keras file")
    p.add_argument("--system", action="store_true",
                   help="print the kernel build chosen at import, the builds available, the CPU "
                        "model and its core count")


def cmd_system(args):
    info = system_info()
    forced = f" (forced by FIXNET_ISA={info['isa_forced']})" if info["isa_forced"] else \
        " (the first runnable of the builds below; FIXNET_ISA=<build> forces one)"
    print(f"fixnet {info['fixnet']} from {info['path']}")
    print(f"kernel build in use: {info['isa']}{forced}")
    print(f"kernel builds installed: {', '.join(info['builds_installed'])}")
    print(f"kernel builds this CPU runs: {', '.join(info['builds_runnable'])}")
    print(f"CPU: {info['cpu']} ({info['machine']}), {info['cores']} cores"
          + (f", {info['cores_usable']} usable by this process"
             if info["cores_usable"] != info["cores"] else ""))
    print(f"platform: {info['platform']}; Python {info['python']}, NumPy {info['numpy']}")
    return 0


def run(args):
    import fixnet
    from ..cost import node_macs
    from ..tables import render_table

    if args.system:
        if args.model:
            cmd_system(args)
            print()
        else:
            return cmd_system(args)
    elif not args.model:
        print("fixnet info: give a model file, or --system", file=sys.stderr)
        return 2
    fm = fixnet.load(args.model)
    g = fm.graph
    rows, total = [], 0
    for n in g.nodes:
        shape = g.shapes[n.outputs[0]]
        m = node_macs(n, shape, g)
        total += m
        rows.append((n.layer, n.keras_class, n.op, str(shape),
                     sum(int(w.size) for w in n.weights.values()), f"{m:,}" if m else ""))
    print(render_table(f"{args.model}: inputs {fm.input_shapes}, outputs {fm.output_shapes}",
                       ["layer", "Keras class", "op", "output shape", "parameters",
                        "MACs/sample"], rows))
    print(f"{total:,} multiply-accumulates per sample (dense, conv, depthwise and recurrent layers)")
    return 0
