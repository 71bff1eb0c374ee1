"""loopdrive's own file format for stable-baselines3 policies: tensors and JSON, never pickle.

An SB3 ``.zip`` stores cloudpickled objects, so loading one can run code. ``loopdrive train ppo``
(and ``loopdrive convert-sb3``) write instead, side by side::

    POLICY.safetensors   the policy's ``state_dict`` (tensors only)
    POLICY.json          what rebuilds the policy object: format, format_version, algo, policy
                         class name, net_arch, activation, features extractor, the observation and
                         action spaces as plain JSON (Box: shape, dtype, low, high; Dict of Boxes),
                         the observation kinds, the action units, the sha256 of the weights and a
                         provenance record

:func:`load_policy` reads both through :func:`sim.fsutil.read_input_bytes` (regular files only,
size-capped), validates the JSON with pydantic (``extra="forbid"``, allow-listed class and
activation names), checks the weights' sha256, builds the SB3 ``ActorCriticPolicy`` /
``MultiInputActorCriticPolicy`` from the description with a constant learning-rate schedule, and
loads the tensors strictly (every name, shape and dtype checked first). Any problem is a
:class:`~sim.errors.BundleError` naming the file and the field or tensor.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.errors import BundleError
from sim.fsutil import atomic_path, atomic_write_text, read_input_bytes

__all__ = [
    "POLICY_FORMAT",
    "POLICY_VERSION",
    "LoadedPolicy",
    "PolicyDescription",
    "describe_policy",
    "load_policy",
    "policy_files",
    "save_policy",
]

POLICY_FORMAT = "loopdrive-sb3-policy"
POLICY_VERSION = 1
#: cap on the description file, bytes
MAX_JSON_BYTES = 16 * 1024 * 1024
#: cap on the weights file, bytes (a driving MLP is well under 1 MiB)
MAX_WEIGHTS_BYTES = 256 * 1024 * 1024
#: caps on what a description may ask to build (checked before any tensor is allocated)
MAX_LAYERS = 16
MAX_WIDTH = 8192
MAX_SPACE_ELEMENTS = 1 << 24

_ACTIVATIONS = ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus")
_EXTRACTORS = ("FlattenExtractor", "CombinedExtractor", "NatureCNN")
_POLICIES = ("ActorCriticPolicy", "ActorCriticCnnPolicy", "MultiInputActorCriticPolicy")
_DTYPES = ("float32", "float64", "float16", "uint8", "int8", "int16", "int32", "int64", "bool")

Bound = float | Literal["inf", "-inf"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoxSpec(_Strict):
    """A ``gymnasium.spaces.Box``: ``low``/``high`` a scalar or a flat list of ``prod(shape)``
    values (``"inf"`` / ``"-inf"`` for infinite bounds: the file is strict JSON)."""

    type: Literal["box"]
    shape: list[int] = Field(max_length=8)
    dtype: Literal[_DTYPES]  # type: ignore[valid-type]
    low: Bound | list[Bound]
    high: Bound | list[Bound]


class DictSpec(_Strict):
    """A ``gymnasium.spaces.Dict`` of Boxes (observation kind -> space)."""

    type: Literal["dict"]
    spaces: dict[str, BoxSpec]


class NetArch(_Strict):
    pi: list[int] = Field(max_length=MAX_LAYERS)
    vf: list[int] = Field(max_length=MAX_LAYERS)


class ExtractorKwargs(_Strict):
    features_dim: int | None = None
    cnn_output_dim: int | None = None
    normalized_image: bool | None = None


class Weights(_Strict):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class PolicyDescription(_Strict):
    """The JSON description of a saved policy (see the module docstring)."""

    format: Literal["loopdrive-sb3-policy"]
    format_version: Literal[1]
    algo: Literal["PPO", "A2C"]
    policy_class: Literal[_POLICIES]  # type: ignore[valid-type]
    net_arch: NetArch
    activation: Literal[_ACTIVATIONS]  # type: ignore[valid-type]
    features_extractor: Literal[_EXTRACTORS]  # type: ignore[valid-type]
    features_extractor_kwargs: ExtractorKwargs = ExtractorKwargs()
    share_features_extractor: bool = True
    normalize_images: bool = True
    observation_space: BoxSpec | DictSpec = Field(discriminator="type")
    action_space: BoxSpec
    observation: list[str] = Field(min_length=1)
    action_units: Literal["normalized", "si"]
    weights: Weights
    provenance: dict[str, str | int | float | bool | None] = {}


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy rebuilt from the safe format: ``policy`` (an SB3 ``BasePolicy``, CPU, eval mode;
    ``policy.predict(obs, deterministic=True)`` as for a model), its description and files."""

    policy: Any
    description: PolicyDescription
    weights: Path
    json: Path


def policy_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights ``.safetensors``, description ``.json``) of a policy named by either file."""
    p = Path(path)
    return p.with_suffix(".safetensors"), p.with_suffix(".json")


# ------------------------------------------------------------------------------------ spaces
def _bound_to_json(a: np.ndarray) -> Any:
    def one(x: float) -> Any:
        return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")

    flat = np.asarray(a, np.float64).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return one(float(flat[0]))
    return [one(float(x)) for x in flat]


def space_to_json(space: Any) -> dict[str, Any]:
    """A Box or a Dict of Boxes as plain JSON (``ValueError`` for any other space)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if np.isnan(space.low).any() or np.isnan(space.high).any():
            raise ValueError("a Box with NaN bounds")
        return {"type": "box", "shape": [int(s) for s in space.shape], "dtype": np.dtype(space.dtype).name,
                "low": _bound_to_json(space.low), "high": _bound_to_json(space.high)}
    if isinstance(space, spaces.Dict):
        return {"type": "dict", "spaces": {str(k): space_to_json(v) for k, v in space.spaces.items()}}
    raise ValueError(f"only Box and Dict-of-Box spaces can be saved, got {type(space).__name__}")


def _bound_array(v: Any, n: int, field: str, file: Path) -> np.ndarray:
    vals = v if isinstance(v, list) else [v]
    if len(vals) not in (1, n):
        raise BundleError(f"expected a number or a list of {n} numbers, got {len(vals)}", file=file, field=field)
    a = np.array([math.inf if x == "inf" else (-math.inf if x == "-inf" else float(x)) for x in vals], np.float64)
    if np.isnan(a).any():
        raise BundleError("expected numbers, got NaN", file=file, field=field)
    return np.broadcast_to(a, (n,)) if a.size == 1 else a


def _box(spec: BoxSpec, file: Path, field: str) -> Any:
    from gymnasium import spaces

    if any(s < 1 for s in spec.shape):
        raise BundleError(f"expected positive dimensions, got {spec.shape}", file=file, field=f"{field}.shape")
    n = math.prod(spec.shape)
    if n > MAX_SPACE_ELEMENTS:
        raise BundleError(f"expected at most {MAX_SPACE_ELEMENTS} elements, got {n}", file=file, field=f"{field}.shape")
    low = _bound_array(spec.low, n, f"{field}.low", file).reshape(spec.shape)
    high = _bound_array(spec.high, n, f"{field}.high", file).reshape(spec.shape)
    if np.any(low > high):
        raise BundleError("expected low <= high everywhere", file=file, field=field)
    dt = np.dtype(spec.dtype)
    if dt.kind in "iub":
        low, high = np.clip(low, *_int_range(dt)), np.clip(high, *_int_range(dt))
    return spaces.Box(low.astype(dt), high.astype(dt), tuple(spec.shape), dt)


def _int_range(dt: np.dtype) -> tuple[float, float]:
    if dt.kind == "b":
        return 0.0, 1.0
    info = np.iinfo(dt)
    return float(info.min), float(info.max)


def _space(spec: BoxSpec | DictSpec, file: Path, field: str) -> Any:
    from gymnasium import spaces

    if isinstance(spec, BoxSpec):
        return _box(spec, file, field)
    if not spec.spaces:
        raise BundleError("expected at least one sub-space", file=file, field=f"{field}.spaces")
    return spaces.Dict({k: _box(v, file, f"{field}.spaces.{k}") for k, v in spec.spaces.items()})


# ------------------------------------------------------------------------------------ describe / save
def describe_policy(policy: Any, *, algo: str, observation: list[str], action_units: str,
                    weights_sha256: str, weights_file: str, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON description of an SB3 actor-critic ``policy`` (``ValueError`` for what the format
    cannot describe: gSDE, squashed outputs, custom extractors or activations, non-Box actions)."""
    cls = type(policy).__name__
    if cls not in _POLICIES:
        raise ValueError(f"expected one of {', '.join(_POLICIES)}, got {cls}")
    if getattr(policy, "use_sde", False) or (policy.dist_kwargs or {}).get("squash_output"):
        raise ValueError("gSDE / squashed-output policies are not supported")
    act = policy.activation_fn.__name__
    ext = policy.features_extractor_class.__name__
    if act not in _ACTIVATIONS:
        raise ValueError(f"expected an activation among {', '.join(_ACTIVATIONS)}, got {act}")
    if ext not in _EXTRACTORS:
        raise ValueError(f"expected a features extractor among {', '.join(_EXTRACTORS)}, got {ext}")
    na = policy.net_arch
    net_arch = {"pi": list(na.get("pi", [])), "vf": list(na.get("vf", []))} if isinstance(na, dict) else {"pi": list(na), "vf": list(na)}
    kw = dict(policy.features_extractor_kwargs or {})
    unknown = sorted(set(kw) - set(ExtractorKwargs.model_fields))
    if unknown:
        raise ValueError(f"unsupported features_extractor_kwargs {unknown}")
    doc = {
        "format": POLICY_FORMAT, "format_version": POLICY_VERSION, "algo": algo, "policy_class": cls,
        "net_arch": net_arch, "activation": act, "features_extractor": ext, "features_extractor_kwargs": kw,
        "share_features_extractor": bool(policy.share_features_extractor), "normalize_images": bool(policy.normalize_images),
        "observation_space": space_to_json(policy.observation_space), "action_space": space_to_json(policy.action_space),
        "observation": list(observation), "action_units": action_units,
        "weights": {"file": weights_file, "sha256": weights_sha256}, "provenance": dict(provenance or {}),
    }
    PolicyDescription.model_validate(doc)  # what we write, we can read
    return doc


def save_policy(policy: Any, out: str | os.PathLike[str], *, algo: str, observation: list[str],
                action_units: str = "normalized", provenance: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``policy`` (an SB3 actor-critic policy) as ``OUT.safetensors`` + ``OUT.json``
    (each atomically; the JSON, which pins the weights' sha256, last). Returns both paths."""
    from safetensors.torch import save

    weights, desc = policy_files(out)
    weights.parent.mkdir(parents=True, exist_ok=True)
    # cloned: with a shared features extractor SB3 lists one tensor under three names, which
    # safetensors refuses to store as aliases (each name gets its own copy; loading fills all three)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in policy.state_dict().items()}
    blob = save(state, metadata={"format": POLICY_FORMAT, "format_version": str(POLICY_VERSION)})
    doc = describe_policy(policy, algo=algo, observation=observation, action_units=action_units,
                          weights_sha256=hashlib.sha256(blob).hexdigest(), weights_file=weights.name, provenance=provenance)
    with atomic_path(weights, suffix=".safetensors") as tmp:
        tmp.write_bytes(blob)
    atomic_write_text(desc, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return weights, desc


# ------------------------------------------------------------------------------------ load
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _read_description(path: Path) -> PolicyDescription:
    raw = read_input_bytes(path, error=BundleError, max_bytes=MAX_JSON_BYTES, what="an SB3 policy description (.json)")
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"expected valid JSON ({str(exc).splitlines()[0]})", file=path) from None
    if not isinstance(doc, dict) or doc.get("format") != POLICY_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise BundleError(f"expected format {POLICY_FORMAT!r} (write one with `loopdrive train ppo`), got {got!r}", file=path, field="format")
    try:
        return PolicyDescription.model_validate(doc)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"] if not str(x).startswith(("function-", "tagged-union")))
        raise BundleError(f"{e['msg']} (got {_short(e.get('input'))})", file=path, field=loc or None) from None


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _features_dim(d: PolicyDescription, space: Any) -> int:
    """The features size the extractor hands the MLP (as SB3 computes it), from the spaces."""
    from gymnasium import spaces
    from stable_baselines3.common.preprocessing import is_image_space

    kw = d.features_extractor_kwargs
    if d.features_extractor == "NatureCNN":
        return int(kw.features_dim or 512)
    if d.features_extractor == "FlattenExtractor":
        return int(math.prod(space.shape)) if isinstance(space, spaces.Box) else sum(math.prod(s.shape) for s in space.spaces.values())
    norm = bool(kw.normalized_image)
    return sum(int(kw.cnn_output_dim or 256) if is_image_space(s, normalized_image=norm) else math.prod(s.shape) for s in space.spaces.values())


def _min_parameters(d: PolicyDescription, obs_space: Any, act_dim: int) -> int:
    """A lower bound on the policy's parameter count (the MLP and heads), computed before anything
    is built, so a description cannot make the loader allocate far more than the file holds."""
    def mlp(widths: list[int], n_in: int) -> int:
        n = 0
        for w in widths:
            n += n_in * w + w
            n_in = w
        return n

    f = _features_dim(d, obs_space)
    pi, vf = d.net_arch.pi, d.net_arch.vf
    return mlp(pi, f) + mlp(vf, f) + (pi[-1] if pi else f) * act_dim + (vf[-1] if vf else f)


def _build(d: PolicyDescription, file: Path) -> Any:
    import torch
    from stable_baselines3.common import policies, torch_layers

    for name, widths in (("pi", d.net_arch.pi), ("vf", d.net_arch.vf)):
        bad = [w for w in widths if not 1 <= w <= MAX_WIDTH]
        if bad:
            raise BundleError(f"expected layer widths in [1, {MAX_WIDTH}], got {bad[0]}", file=file, field=f"net_arch.{name}")
    kw = {k: v for k, v in d.features_extractor_kwargs.model_dump().items() if v is not None}
    for k in ("features_dim", "cnn_output_dim"):
        if k in kw and not 1 <= kw[k] <= MAX_WIDTH:
            raise BundleError(f"expected a value in [1, {MAX_WIDTH}], got {kw[k]}", file=file, field=f"features_extractor_kwargs.{k}")
    obs_space = _space(d.observation_space, file, "observation_space")
    act_space = _box(d.action_space, file, "action_space")
    is_dict = isinstance(d.observation_space, DictSpec)
    if is_dict != (d.policy_class == "MultiInputActorCriticPolicy") or is_dict != (d.features_extractor == "CombinedExtractor"):
        raise BundleError("expected MultiInputActorCriticPolicy with CombinedExtractor exactly for a dict observation space", file=file, field="policy_class")
    cls = getattr(policies, d.policy_class)
    return cls, obs_space, act_space, dict(
        net_arch={"pi": list(d.net_arch.pi), "vf": list(d.net_arch.vf)}, activation_fn=getattr(torch.nn, d.activation),
        features_extractor_class=getattr(torch_layers, d.features_extractor), features_extractor_kwargs=kw,
        share_features_extractor=d.share_features_extractor, normalize_images=d.normalize_images,
    )


def _check_tensors(state: dict[str, Any], want: dict[str, Any], file: Path) -> None:
    for k, v in want.items():
        if k not in state:
            raise BundleError(f"expected tensor {k!r} of shape {tuple(v.shape)}, it is missing", file=file, field=k)
        got = state[k]
        if tuple(got.shape) != tuple(v.shape) or got.dtype != v.dtype:
            raise BundleError(f"expected shape {tuple(v.shape)} {v.dtype}, got {tuple(got.shape)} {got.dtype}", file=file, field=k)
    extra = sorted(set(state) - set(want))
    if extra:
        raise BundleError(f"expected no tensor {extra[0]!r} (not part of the described policy)", file=file, field=extra[0])


def load_policy(path: str | os.PathLike[str]) -> LoadedPolicy:
    """Rebuild a saved policy from ``POLICY.safetensors`` + ``POLICY.json`` (either path may be
    given). Reads tensors and JSON only; raises :class:`BundleError` on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    weights, desc_path = policy_files(path)
    d = _read_description(desc_path)
    cls, obs_space, act_space, kwargs = _build(d, desc_path)
    blob = read_input_bytes(weights, error=BundleError, max_bytes=MAX_WEIGHTS_BYTES, what="policy weights (.safetensors)")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != d.weights.sha256:
        raise BundleError(f"expected sha256 {d.weights.sha256} (recorded in {desc_path.name}), got {digest}: "
                          "the weights were modified or belong to another description", file=weights)
    try:
        state = load_tensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BundleError(f"expected a readable safetensors file ({str(exc).splitlines()[0]})", file=weights) from None
    n_file = sum(int(t.numel()) for t in state.values())
    n_min = _min_parameters(d, obs_space, int(math.prod(act_space.shape)))
    if n_min > n_file:
        raise BundleError(f"expected at least {n_min} parameters for the described policy, the weights hold {n_file}", file=weights)
    policy = cls(obs_space, act_space, lambda _: 0.0, **kwargs)
    policy = policy.to("cpu")
    _check_tensors(state, policy.state_dict(), weights)
    policy.load_state_dict(state, strict=True)
    policy.set_training_mode(False)
    return LoadedPolicy(policy, d, weights, desc_path)
