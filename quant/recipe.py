"""Quantization recipes: which scheme each layer gets, as data that travels with the artifact.

A :class:`QuantRecipe` is an ordered list of :class:`Rule` s. Each rule matches layers by *role*
(``decoder``, ``vision_encoder``, ``projector``, ``token_embedding``, ``lm_head``; see
:func:`edgevlm.quant.apply.layer_roles`) and optionally by a regex over the module path; the first
matching rule gives the layer's :class:`Scheme`. Layers no rule matches stay float. The recipe is
a plain dataclass that round-trips through JSON, and it is written into every quantized
checkpoint (``config.json`` and the safetensors metadata), so nothing is guessed later.

Schemes are written compactly as ``int4:g32``, ``int4:g128:asym:fp16``, ``int8``,
``int8:a=static:outliers=8``, ``float`` (see :meth:`Scheme.parse`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from ..errors import InputError

WEIGHTS = ("int4", "int8", "float")
# none: weight-only (float activations); token: dynamic int8 per token, asymmetric (8da4w, XNNPACK
# qd8); group32: dynamic int8 per 32 input channels, symmetric (llama.cpp Q8_0 blocks);
# static: int8 per tensor with a calibrated scale, symmetric (NPUs), outlier channels in float.
ACTIVATIONS = ("none", "token", "group32", "static")
ROLES = ("vision_encoder", "projector", "token_embedding", "decoder", "lm_head")
ALGORITHMS = ("rtn", "gptq", "awq")
KV_CACHE = ("float", "int8")


@dataclass(frozen=True)
class Scheme:
    """How one layer's weights (and activations) are represented."""

    weight: str = "int4"  # int4 | int8 | float
    group_size: int = 32  # int4: 32/64/128 along the input dim; int8: 0 = one group per output channel
    symmetric: bool = True
    scale_dtype: str = "float32"  # float32 | float16
    activations: str = "none"  # see ACTIVATIONS
    outliers: int = 0  # static activations: input channels kept in float (the largest by calibration max)
    outlier_threshold: float = 0.0  # ... or every channel whose max exceeds this multiple of the median channel max

    def __post_init__(self) -> None:
        if self.weight not in WEIGHTS:
            raise InputError(f"weight scheme {self.weight!r} unknown; choose from {', '.join(WEIGHTS)}")
        if self.activations not in ACTIVATIONS:
            raise InputError(f"activation scheme {self.activations!r} unknown; choose from {', '.join(ACTIVATIONS)}")
        if self.scale_dtype not in ("float32", "float16"):
            raise InputError(f"scale dtype {self.scale_dtype!r} unknown; choose float32 or float16")
        if self.weight == "int4" and self.group_size not in (16, 32, 64, 128, 256):
            raise InputError(f"int4 group size must be 16, 32, 64, 128 or 256, got {self.group_size}")
        if self.weight == "int8" and not self.symmetric:
            raise InputError("int8 weights are symmetric per channel; asymmetric int8 is not supported")
        if self.weight == "float" and self.activations != "none":
            raise InputError("float weights take float activations")
        if (self.outliers or self.outlier_threshold) and self.activations != "static":
            raise InputError("outlier channels apply to static activation quantization only (a=static)")
        if self.outliers < 0 or self.outlier_threshold < 0:
            raise InputError("outliers and outlier_threshold must be >= 0")

    @property
    def bits(self) -> int:
        return {"int4": 4, "int8": 8, "float": 32}[self.weight]

    @property
    def quantized(self) -> bool:
        return self.weight != "float"

    def group_for(self, in_features: int) -> int:
        """The group length used for a layer with ``in_features`` inputs.

        Per-channel int8: all of them. Group-wise: the scheme's group, halved (down to 32) while half
        of it still covers every input, so a narrow layer is not padded to a wide group.
        """
        if not (self.weight == "int4" or self.group_size):
            return in_features
        g = self.group_size
        while g > 32 and g // 2 >= in_features:
            g //= 2
        return g

    def __str__(self) -> str:
        if self.weight == "float":
            return "float"
        parts = [self.weight]
        if self.weight == "int4" or self.group_size:
            parts.append(f"g{self.group_size}")
        if not self.symmetric:
            parts.append("asym")
        if self.scale_dtype == "float16":
            parts.append("fp16")
        if self.activations != "none":
            parts.append(f"a={self.activations}")
        if self.outliers:
            parts.append(f"outliers={self.outliers}")
        if self.outlier_threshold:
            parts.append(f"outlier_threshold={self.outlier_threshold:g}")
        return ":".join(parts)

    @classmethod
    def parse(cls, text: str) -> Scheme:
        """``int4:g32``, ``int4:g128:asym:fp16:a=token``, ``int8``, ``int8:a=static:outliers=8``, ``float``."""
        head, *opts = [p.strip() for p in text.strip().split(":")]
        if head not in WEIGHTS:
            raise InputError(f"scheme {text!r}: starts with one of {', '.join(WEIGHTS)}")
        kw: dict = {"weight": head, "group_size": 32 if head == "int4" else 0}
        for opt in opts:
            if re.fullmatch(r"g\d+", opt):
                kw["group_size"] = int(opt[1:])
            elif opt in ("sym", "asym"):
                kw["symmetric"] = opt == "sym"
            elif opt in ("fp16", "fp32"):
                kw["scale_dtype"] = "float16" if opt == "fp16" else "float32"
            elif opt.startswith("a="):
                kw["activations"] = opt[2:]
            elif opt.startswith("outliers="):
                kw["outliers"] = _number(text, opt, int)
            elif opt.startswith("outlier_threshold="):
                kw["outlier_threshold"] = _number(text, opt, float)
            else:
                raise InputError(f"scheme {text!r}: unknown option {opt!r} (gN, sym|asym, fp16|fp32, a=..., outliers=N)")
        return cls(**kw)


def _number(text: str, opt: str, kind):
    try:
        return kind(opt.split("=", 1)[1])
    except ValueError:
        raise InputError(f"scheme {text!r}: {opt!r} needs a number") from None


FLOAT = Scheme(weight="float", group_size=0)


@dataclass(frozen=True)
class Rule:
    """Layers of ``role`` (any role when empty) whose path matches ``pattern`` (any when empty) get ``scheme``."""

    scheme: Scheme
    role: str = ""
    pattern: str = ""

    def __post_init__(self) -> None:
        if self.role and self.role not in ROLES:
            raise InputError(f"rule role {self.role!r} unknown; choose from {', '.join(ROLES)}")
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise InputError(f"rule pattern {self.pattern!r} is not a valid regex ({e})") from None

    def matches(self, path: str, role: str) -> bool:
        return (not self.role or self.role == role) and (not self.pattern or re.search(self.pattern, path) is not None)


@dataclass(frozen=True)
class QuantRecipe:
    """An ordered rule list (first match wins), the algorithm for int4 layers, and the KV cache format."""

    name: str
    rules: tuple[Rule, ...]
    algorithm: str = "rtn"  # rtn | gptq | awq (int4 layers; int8 layers are always round-to-nearest)
    kv_cache: str = "float"  # float | int8 (per token and head)
    gptq_damping: float = 0.01  # fraction of the Hessian's mean diagonal added to it
    gptq_act_order: bool = False  # columns by decreasing Hessian diagonal (groups stay contiguous)
    awq_grid: int = 20  # scale exponents tried in [0, 1)
    description: str = ""

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"algorithm {self.algorithm!r} unknown; choose from {', '.join(ALGORITHMS)}")
        if self.kv_cache not in KV_CACHE:
            raise InputError(f"KV cache format {self.kv_cache!r} unknown; choose from {', '.join(KV_CACHE)}")

    def scheme_for(self, path: str, role: str) -> Scheme:
        """The scheme of the layer at module ``path`` playing ``role``: the predicate over paths."""
        for rule in self.rules:
            if rule.matches(path, role):
                return rule.scheme
        return FLOAT

    def with_rule(self, rule: Rule, first: bool = True) -> QuantRecipe:
        """A copy with one more rule, ahead of the others by default (an override)."""
        rules = (rule, *self.rules) if first else (*self.rules, rule)
        return replace(self, rules=rules)

    def replace(self, **changes) -> QuantRecipe:
        return replace(self, **changes)

    @property
    def needs_calibration(self) -> bool:
        return self.algorithm != "rtn" or any(r.scheme.activations == "static" for r in self.rules)

    # --- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["rules"] = [{"scheme": str(r.scheme), "role": r.role, "pattern": r.pattern} for r in self.rules]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> QuantRecipe:
        try:
            rules = tuple(Rule(Scheme.parse(r["scheme"]), r.get("role", ""), r.get("pattern", "")) for r in d["rules"])
            known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "rules"}
            return cls(rules=rules, **known)
        except (KeyError, TypeError) as e:
            raise InputError(f"malformed quantization recipe ({e!r})") from None

    @classmethod
    def from_json(cls, text: str) -> QuantRecipe:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise InputError(f"quantization recipe is not valid JSON ({e})") from None


# --- presets ---------------------------------------------------------------------------------------
def _standard(name: str, lm: Scheme, vision: Scheme, description: str, embed: Scheme | None = None,
              head: Scheme | None = None) -> QuantRecipe:
    int8 = Scheme(weight="int8", group_size=0, activations=lm.activations if lm.activations != "group32" else "token")
    return QuantRecipe(name, (
        Rule(lm, role="decoder"),
        Rule(vision, role="vision_encoder"),
        Rule(int8, role="projector"),
        Rule(embed or Scheme(weight="int8", group_size=0), role="token_embedding"),
        Rule(head or int8, role="lm_head"),
    ), description=description)


_W8 = Scheme(weight="int8", group_size=0)
PRESETS: dict[str, QuantRecipe] = {
    **{f"w4g{g}": _standard(f"w4g{g}", Scheme(group_size=g), _W8,
                            f"int4 g{g} symmetric language-model linears, int8 per-channel vision tower, projector, "
                            "embedding and LM head; float activations") for g in (32, 64, 128)},
    "w4g32-vision4": _standard("w4g32-vision4", Scheme(group_size=32), Scheme(group_size=32),
                               "w4g32 with the vision tower in int4 g32 too"),
    "8da4w": _standard("8da4w", Scheme(group_size=32, activations="token"), Scheme(weight="int8", group_size=0, activations="token"),
                       "int4 g32 weights x dynamic per-token int8 activations (what ExecuTorch's XNNPACK runs); "
                       "int8 per-channel elsewhere"),
    "w4a8g32": _standard("w4a8g32", Scheme(group_size=32, activations="group32"), Scheme(weight="int8", group_size=0, activations="token"),
                         "int4 g32 weights x dynamic int8 activations per 32 inputs (llama.cpp Q4_0 x Q8_0)"),
    "w8a8-npu": _standard("w8a8-npu", Scheme(weight="int8", group_size=0, activations="static", outliers=4),
                          Scheme(weight="int8", group_size=0, activations="static", outliers=4),
                          "int8 per-channel weights x static per-tensor int8 activations, the 4 largest input "
                          "channels of each layer kept in float on a separate path (shadow outliers)"),
    "w8a8-static": _standard("w8a8-static", Scheme(weight="int8", group_size=0, activations="static"),
                             Scheme(weight="int8", group_size=0, activations="static"),
                             "int8 per-channel weights x static per-tensor int8 activations, no outlier path"),
}
# the int8 projector and LM head follow the static scheme in the NPU presets
for _name in ("w8a8-npu", "w8a8-static"):
    _lm = PRESETS[_name].rules[0].scheme
    PRESETS[_name] = replace(PRESETS[_name], rules=(
        *PRESETS[_name].rules[:2], Rule(_lm, role="projector"), PRESETS[_name].rules[3], Rule(_lm, role="lm_head")))


def preset(name: str) -> QuantRecipe:
    """A named recipe; an unknown name lists the known ones."""
    if name not in PRESETS:
        raise InputError(f"unknown recipe {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["ACTIVATIONS", "ALGORITHMS", "FLOAT", "PRESETS", "ROLES", "QuantRecipe", "Rule", "Scheme", "preset"]
