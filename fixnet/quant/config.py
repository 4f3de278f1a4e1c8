"""QuantConfig: every choice ``quantize`` makes, in one frozen object that can be printed,
saved (the .fxn file records it; ``fixnet inspect`` shows it) and reused.

    cfg = fixnet.QuantConfig(activations="int16", overrides={"conv_*": {"method": "mse"}})
    qm = model.quantize(calibration, cfg)
    qm = model.quantize(calibration, activations="int16")     # the same, as a shorthand

Per-layer overrides map a layer name, or an fnmatch pattern of names ("block_3_*"), to the
keys of LayerOverride; where several patterns match one layer, the later one wins key by key.
"""
import fnmatch
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional, Tuple

from ..errors import ConfigError
from .ranges import METHODS

ACTIVATION_TYPES = ("int8", "int16")
# ops that run int16 activations (their kernels and oracles take int16 arrays); a node of
# another op stays int8 when int16 is asked of every layer, and an override asking it of one
# is refused
INT16_OPS = {"dense", "conv2d", "depthwise_conv2d", "pool", "global_pool", "pad", "binary",
             "concat", "affine", "prelu", "activation", "softmax", "reshape", "transpose",
             "identity", "upsample", "crop", "zero_insert", "embedding", "masking",
             "masked_mean", "token_mask", "rnn"}

WEIGHT_TYPES = ("int8", "codebook16", "codebook16-channel", "int4")
ROUNDINGS = ("nearest", "adaptive")
CLIPPINGS = (None, "mse")


def _choice(value, allowed, what):
    if value not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(map(repr, allowed))}, not {value!r}")
    return value


@dataclass(frozen=True)
class LayerOverride:
    """What one layer (or every layer a pattern matches) does differently; None: as the
    config says for every layer."""
    activations: Optional[str] = None   # "int8" | "int16": the type of the layer's output
    method: Optional[str] = None        # range method of the layer's output (see ranges.METHODS)
    per_channel: Optional[bool] = None  # weight scales per output channel, or one per tensor
    weights: Optional[str] = None       # "int8" | "codebook16" | "int4"

    def __post_init__(self):
        if self.activations is not None:
            _choice(self.activations, ACTIVATION_TYPES, "override 'activations'")
        if self.method is not None:
            _choice(self.method, METHODS, "override 'method'")
        if self.per_channel is not None and not isinstance(self.per_channel, bool):
            raise ConfigError(f"override 'per_channel' must be True or False, not {self.per_channel!r}")
        if self.weights is not None:
            _choice(self.weights, WEIGHT_TYPES, "override 'weights'")

    @classmethod
    def of(cls, value, pattern):
        """A LayerOverride from a LayerOverride or a mapping of its keys (ConfigError naming
        ``pattern`` and the unknown key otherwise)."""
        if isinstance(value, LayerOverride):
            return value
        if not hasattr(value, "items"):
            raise ConfigError(f"override for {pattern!r} must be a mapping of "
                              f"{', '.join(KEYS)}, not {type(value).__name__}")
        unknown = [k for k in value if k not in KEYS]
        if unknown:
            raise ConfigError(f"override for {pattern!r}: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"the keys are {', '.join(KEYS)}")
        try:
            return cls(**dict(value))
        except ConfigError as e:
            raise ConfigError(f"override for {pattern!r}: {e}") from None

    def set_keys(self):
        return {k: v for k, v in asdict(self).items() if v is not None}


KEYS = tuple(f.name for f in fields(LayerOverride))


@dataclass(frozen=True)
class QuantConfig:
    """How ``quantize`` turns the float model into an integer one (FloatModel.quantize
    documents each choice; the keyword arguments of quantize are shorthands for these)."""
    method: str = "auto"                  # activation range method (ranges.METHODS)
    percentile: float = 99.99             # for method="percentile", in (50, 100]
    per_channel: bool = True              # weight scales per output channel
    weight_clipping: Optional[str] = None     # None or "mse"
    weight_rounding: str = "adaptive"     # "adaptive" or "nearest"
    bias_correction: bool = True
    softmax_levels: int = 255             # int8 softmax output scale 1/levels: 255 or 256
    activations: str = "int8"             # every layer's activation type: "int8" or "int16"
    weights: str = "int8"                 # "int8", "codebook16" (16-level k-means), "int4"
    overrides: Tuple[Tuple[str, LayerOverride], ...] = field(default=())
    target_sqnr: Optional[float] = None   # dB against the float model: adjust until met
    target_agreement: Optional[float] = None  # top-1 agreement with the float model, in (0, 1]
    on_overflow_risk: str = "error"       # "error" or "warn"

    def __post_init__(self):
        _choice(self.method, METHODS, "method")
        if not isinstance(self.percentile, (int, float)) or not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], not {self.percentile!r}")
        if not isinstance(self.per_channel, bool):
            raise ConfigError(f"per_channel must be True or False, not {self.per_channel!r}")
        _choice(self.weight_clipping, CLIPPINGS, "weight_clipping")
        _choice(self.weight_rounding, ROUNDINGS, "weight_rounding")
        if not isinstance(self.bias_correction, bool):
            raise ConfigError(f"bias_correction must be True or False, not {self.bias_correction!r}")
        _choice(self.softmax_levels, (255, 256), "softmax_levels")
        _choice(self.activations, ACTIVATION_TYPES, "activations")
        _choice(self.weights, WEIGHT_TYPES, "weights")
        _choice(self.on_overflow_risk, ("error", "warn"), "on_overflow_risk")
        object.__setattr__(self, "overrides", _normalized_overrides(self.overrides))
        if self.target_sqnr is not None:
            if isinstance(self.target_sqnr, bool) or not isinstance(self.target_sqnr, (int, float)) \
                    or not math.isfinite(self.target_sqnr):
                raise ConfigError(f"target_sqnr must be a number of dB, not {self.target_sqnr!r}")
            object.__setattr__(self, "target_sqnr", float(self.target_sqnr))
        if self.target_agreement is not None:
            t = self.target_agreement
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < t <= 1.0:
                raise ConfigError(f"target_agreement must be a fraction in (0, 1], not {t!r}")
            object.__setattr__(self, "target_agreement", float(t))

    # -- per layer ----------------------------------------------------------------------
    def for_layer(self, *names):
        """The LayerOverride keys set for a layer known by any of ``names`` (its Keras layer
        name, its node name), the later patterns winning key by key."""
        out = {}
        for pattern, ov in self.overrides:
            if any(n and fnmatch.fnmatchcase(n, pattern) for n in names):
                out.update(ov.set_keys())
        return out

    def layer_value(self, key, *names):
        """One setting for a layer: its override if any, else the config's own."""
        return self.for_layer(*names).get(key, getattr(self, key))

    def unmatched_patterns(self, names):
        """The override patterns that match none of ``names``."""
        return [p for p, _ in self.overrides
                if not any(fnmatch.fnmatchcase(n, p) for n in names if n)]

    def with_overrides(self, more):
        """A copy with the overrides ``more`` ({pattern: keys}) appended (they win)."""
        return replace(self, overrides=self.overrides + _normalized_overrides(more))

    # -- records ------------------------------------------------------------------------
    def to_dict(self):
        """Plain data (JSON-able): what the .fxn file records."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "overrides"}
        d["overrides"] = [[p, ov.set_keys()] for p, ov in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d):
        """The config of ``to_dict``'s data; ConfigError for unknown keys or values."""
        if not hasattr(d, "items"):
            raise ConfigError(f"a quantization config must be a mapping, not {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = [k for k in d if k not in names]
        if unknown:
            raise ConfigError(f"quantization config: unknown key(s) {', '.join(map(repr, unknown))}")
        d = dict(d)
        if "overrides" in d:
            d["overrides"] = _normalized_overrides(d["overrides"])
        return cls(**d)

    def describe(self):
        """One line per setting that differs from the default, or "defaults"."""
        default = QuantConfig()
        lines = [f"{f.name} = {getattr(self, f.name)!r}" for f in fields(self)
                 if f.name != "overrides" and getattr(self, f.name) != getattr(default, f.name)]
        lines += [f"override {p!r}: " + ", ".join(f"{k}={v!r}" for k, v in ov.set_keys().items())
                  for p, ov in self.overrides]
        return "\n".join(lines) or "defaults"


def exact_pattern(name):
    """An fnmatch pattern that matches exactly the layer name ``name``."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _normalized_overrides(overrides):
    """((pattern, LayerOverride), ...) from a mapping {pattern: keys} or pairs."""
    if overrides is None:
        return ()
    items = overrides.items() if hasattr(overrides, "items") else overrides
    out = []
    try:
        items = list(items)
    except TypeError:
        raise ConfigError(f"overrides must be a mapping of layer name (or pattern) to settings, "
                          f"not {type(overrides).__name__}") from None
    for item in items:
        try:
            pattern, value = item
        except (TypeError, ValueError):
            raise ConfigError(f"overrides: {item!r} is not a (layer name, settings) pair") from None
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"overrides: a layer name or pattern must be a non-empty string, "
                              f"not {pattern!r}")
        out.append((pattern, LayerOverride.of(value, pattern)))
    return tuple(out)


def parse_override(text):
    """One command-line override "NAME:KEY=VALUE[,KEY=VALUE]" -> (NAME, {KEY: value})."""
    name, sep, rest = text.rpartition(":")
    if not sep or not name or not rest:
        raise ConfigError(f"override {text!r}: expected NAME:KEY=VALUE (e.g. conv_1:activations=int16)")
    keys = {}
    for part in rest.split(","):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in KEYS:
            raise ConfigError(f"override {text!r}: {part!r} is not KEY=VALUE with KEY one of "
                              f"{', '.join(KEYS)}")
        if key == "per_channel":
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"override {text!r}: per_channel must be true or false")
            keys[key] = value.lower() == "true"
        else:
            keys[key] = value
    LayerOverride.of(keys, name)
    return name, keys
