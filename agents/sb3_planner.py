"""``sb3``: a stable-baselines3 policy as a :class:`~sim.planning.Planner`, PPO training on the
Gymnasium env (``loopdrive train ppo``) and the conversion of foreign SB3 zips
(``loopdrive convert-sb3``).

The policy must have been trained on ``loopdrive/ClosedLoop-v0`` with ``action_mode="control"``.
Normalised actions ([-1, 1]², the env's default for control) are mapped back to SI (m/s², rad)
with the engine's bicycle limits.

Files: ``train_ppo`` writes loopdrive's own policy format, ``POLICY.safetensors`` +
``POLICY.json`` (:mod:`agents.sb3_format`): tensors and a JSON description, loaded without
unpickling anything. An SB3 ``.zip`` holds cloudpickled objects -- loading one can run code -- so
the planner refuses it unless its ``trust_pickle`` parameter is the command line's opt-in
(:data:`TRUST_PICKLE`, set by ``--trust-pickle`` on ``loopdrive run``, ``leaderboard`` and
``export``). That value is a :class:`PickleOptIn`, which no YAML or JSON reader produces: a
scenario file naming ``trust_pickle`` is refused, whatever its value. Nothing is read from the
working directory by default: without ``path`` (or an in-process ``model``) the planner is an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, StrictStr, ValidationError

from sim.dynamics import BicycleLimits
from sim.errors import BundleError, ScenarioError
from sim.fsutil import check_input_file
from sim.planning import Control, Observation, ObservationSpec, Planner, PlannerInit
from sim.planning.training import ENV_ID, RLTrainer

__all__ = [
    "TRUST_PICKLE",
    "PPOTrainer",
    "PickleOptIn",
    "SB3Params",
    "SB3Planner",
    "convert_sb3_zip",
    "load_sb3",
    "train_ppo",
]

log = logging.getLogger(__name__)

_ALGOS = ("PPO", "A2C", "SAC", "TD3", "DDPG", "DQN")
_SAFE_OBJECTS = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
_ZIP_MAGIC = b"PK\x03\x04"


class PickleOptIn(str):
    """The command-line opt-in to unpickling an SB3 zip. A ``str`` subclass so it travels to
    worker processes and is recorded in JSON as text; YAML and JSON readers only ever produce plain
    ``str``, so a file cannot forge it."""

    __slots__ = ()


#: the value ``--trust-pickle`` puts in the ``sb3`` planner's parameters
TRUST_PICKLE = PickleOptIn("--trust-pickle")

_REFUSED = ("refusing to load a stable-baselines3 .zip: the format is pickle-based and can run code when loaded; use a "
            "loopdrive policy (.safetensors + .json): convert the zip once with `loopdrive convert-sb3 ZIP --out "
            "POLICY.safetensors --trust-pickle`, or pass --trust-pickle on the command line if you trust its author")  # fmt: skip


class SB3Params(BaseModel):
    """The ``sb3`` planner's parameters a scenario file may give.

    ``path``: the policy (``.safetensors`` with its ``.json`` beside it, or a trusted ``.zip``);
    ``algo``: SB3 algorithm class of a zip; ``observation``: kinds (a zip's; a safe policy
    records its own); ``action_units``: ``normalized`` | ``si``; ``deterministic``: mean action.
    Code-only (:attr:`SB3Planner.code_params`, refused in a file): ``model``, an already loaded
    SB3 model or policy (notebooks), and ``trust_pickle``, only the command line's
    :data:`TRUST_PICKLE`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None
    algo: Literal["PPO", "A2C", "SAC", "TD3", "DDPG", "DQN"] = "PPO"
    observation: StrictStr | list[StrictStr] | None = None
    action_units: Literal["normalized", "si"] | None = None
    deterministic: StrictBool = True


_CODE_PARAMS = frozenset({"model", "trust_pickle"})


def _params(params: Mapping[str, Any]) -> tuple[SB3Params, Any, Any]:
    """(file parameters, ``model``, ``trust_pickle``) of the planner's keyword arguments."""
    if "trust_pickle" in params and not isinstance(params["trust_pickle"], PickleOptIn):
        raise ScenarioError(f"cannot be set in a file (got {str(params['trust_pickle'])[:40]!r}): the opt-in to unpickling is the "
                            "command-line flag --trust-pickle", field="planner.params.trust_pickle")
    try:
        p = SB3Params.model_validate({k: v for k, v in params.items() if k not in _CODE_PARAMS})
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ScenarioError(f"{e['msg']} (got {str(e.get('input'))[:60]!r})", field=f"planner.params.{loc}") from None
    return p, params.get("model"), params.get("trust_pickle")


def _is_zip(path: Path) -> bool:
    check_input_file(path, error=BundleError, max_bytes=None, what="a policy file", field="planner.params.path")
    if path.suffix.lower() == ".zip":
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == _ZIP_MAGIC


def load_sb3(path: str | os.PathLike[str], algo: str = "PPO", *, trust_pickle: bool = False, field: str | None = None) -> Any:
    """A stable-baselines3 model from a pickle-based zip -- only with ``trust_pickle`` (the user's
    explicit opt-in); :class:`BundleError` otherwise (``field``: where the path came from), or when
    missing or unreadable."""
    import stable_baselines3 as sb3

    if algo not in _ALGOS:
        raise ScenarioError(f"expected one of {', '.join(_ALGOS)}, got {algo!r}", field="planner.params.algo")
    p = check_input_file(path, error=BundleError, max_bytes=None, what="a stable-baselines3 policy zip", field=field)
    if not trust_pickle:
        raise BundleError(_REFUSED, file=p, field=field)
    log.warning("unpickling %s (--trust-pickle)", p)
    try:
        return getattr(sb3, algo).load(str(p), device="cpu", custom_objects=_SAFE_OBJECTS)
    except Exception as exc:
        raise BundleError(f"cannot load the policy ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", file=p) from None


class SB3Planner(Planner):
    """Params (:class:`SB3Params`): ``path`` (a ``.safetensors`` policy from ``loopdrive train
    ppo``, required unless ``model`` is given), ``deterministic`` (True); for a zip only (with
    ``--trust-pickle``): ``algo``, ``observation`` (kinds, default ``["state"]``), ``action_units``
    (``normalized`` | ``si``)."""

    name = "sb3"
    #: declared parameters (checked by `loopdrive validate`); ``model`` and ``trust_pickle`` are
    #: code / command-line only: a scenario file that sets them is refused
    Params = SB3Params  # type: ignore[assignment]
    code_params = _CODE_PARAMS
    input_files = frozenset({"path"})  # checked before a run starts

    def __init__(self, **params: Any) -> None:
        p, model, trust_pickle = _params(params)
        super().__init__(**params)
        self.deterministic = p.deterministic
        self.model = model
        if self.model is not None and not callable(getattr(self.model, "predict", None)):
            raise ScenarioError(f"expected an SB3 model or policy object (in-process only), got {type(self.model).__name__}",
                                field="planner.params.model")
        self.limits = BicycleLimits()
        self.path: Path | None = None
        self.zip = False
        kinds: Any = p.observation
        units = p.action_units
        if self.model is None:
            if p.path is None:
                raise ScenarioError("expected the policy file (`loopdrive train ppo` writes one), got no path",
                                    field="planner.params.path")
            self.path = Path(p.path)
            self.zip = _is_zip(self.path)
            if self.zip:
                if trust_pickle is None:
                    raise BundleError(_REFUSED, file=self.path, field="planner.params.path")
                self.algo = p.algo
            else:
                kinds, units = self._recorded(kinds, units)
        kinds = kinds if kinds is not None else ("state",)
        self.kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        self.units = units or "normalized"

    @classmethod
    def with_opt_ins(cls, params: Mapping[str, Any], *, trust_pickle: bool = False) -> dict[str, Any]:
        """``params`` with the command line's ``--trust-pickle`` added, checked now: no path, a
        bad description or a zip without the opt-in raises here, before any output is written."""
        prm = _with_opt_in(params, trust_pickle)
        _preflight(prm)
        return prm

    def _recorded(self, kinds: Any, units: str | None) -> tuple[Any, str]:
        """Kinds and units from the policy's description (given params must agree with them)."""
        from agents.sb3_format import _read_description, policy_files

        assert self.path is not None
        desc_path = policy_files(self.path)[1]
        d = _read_description(desc_path)
        if kinds is not None and list((kinds,) if isinstance(kinds, str) else kinds) != d.observation:
            raise ScenarioError(f"expected the policy's kinds {d.observation} (recorded in {desc_path}), got {kinds}",
                                field="planner.params.observation")
        if units is not None and units != d.action_units:
            raise ScenarioError(f"expected the policy's units {d.action_units!r} (recorded in {desc_path}), got {units!r}",
                                field="planner.params.action_units")
        return d.observation, d.action_units

    def observation_spec(self) -> ObservationSpec:
        return ObservationSpec(kinds=self.kinds)

    def reset(self, init: PlannerInit, *, seed: int | None = None) -> None:
        if self.model is not None:
            return
        assert self.path is not None
        if self.zip:
            self.model = load_sb3(self.path, self.algo, trust_pickle=True, field="planner.params.path")
        else:
            from agents.sb3_format import load_policy

            self.model = load_policy(self.path).policy

    def plan(self, obs: Observation) -> Control:
        assert self.model is not None, "reset() first"
        x = obs[self.kinds[0]] if len(self.kinds) == 1 else {k: obs[k] for k in self.kinds}
        act, _ = self.model.predict(x, deterministic=self.deterministic)
        a = np.asarray(act, np.float64).reshape(-1)
        if self.units == "normalized":
            a = np.clip(a, -1.0, 1.0)
            acc = a[0] * (self.limits.accel_max if a[0] >= 0 else self.limits.decel_max)
            return Control(float(acc), float(a[1] * self.limits.steer_max))
        return Control(float(a[0]), float(a[1]))


# ------------------------------------------------------------------------------------ the CLI opt-in
def _with_opt_in(params: Mapping[str, Any], trust_pickle: bool) -> dict[str, Any]:
    out = dict(params)
    if trust_pickle:
        out["trust_pickle"] = TRUST_PICKLE
    return out


def _preflight(params: Mapping[str, Any]) -> None:
    """Everything a run would refuse about these ``sb3`` params, now: the parameters, the file kind
    and, for loopdrive's format, the whole policy (description, sha256, tensors) -- so a bad policy
    is one line and exit 2 before any output, not an errored episode. A trusted zip is not opened
    here (the workers unpickle it)."""
    pl = SB3Planner(**params)
    if pl.path is not None and not pl.zip:
        from agents.sb3_format import load_policy

        load_policy(pl.path)


# ------------------------------------------------------------------------------------ training
def _provenance(**extra: Any) -> dict[str, Any]:
    import datetime

    import stable_baselines3
    import torch

    try:
        from importlib.metadata import version

        ld = version("loopdrive")
    except Exception:  # pragma: no cover - not installed as a distribution
        ld = None
    return {"loopdrive": ld, "stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "created_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}


def _check_out(out: str | os.PathLike[str]) -> Path:
    outp = Path(out)
    if outp.suffix != ".safetensors":
        raise ScenarioError(f"expected a .safetensors path (the description goes to .json beside it), got {str(outp)!r}", field="out")
    return outp


def train_ppo(
    scenario: str | os.PathLike[str] | Any,
    steps: int,
    out: str | os.PathLike[str],
    *,
    observation: Sequence[str] = ("state",),
    seed: int = 0,
    n_steps: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Train PPO (``MlpPolicy``, or ``MultiInputPolicy`` for several kinds) on
    ``loopdrive/ClosedLoop-v0`` for ``steps`` environment steps and save the policy to ``out``
    (``.safetensors``, its ``.json`` description beside it; see :mod:`agents.sb3_format`).
    ``progress(done, total)`` is called as steps complete. Returns ``out``."""
    import gymnasium
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    from agents.sb3_format import save_policy

    if steps < 1:
        raise ScenarioError(f"expected a positive number of steps, got {steps}", field="steps")
    outp = _check_out(out)
    # the env through Gymnasium's registry (registered at ``import sim``), as any RL code reaches it
    env = gymnasium.make(ENV_ID, disable_env_checker=True, scenario=scenario, observation=list(observation),
                         action_mode="control").unwrapped  # fmt: skip

    class _Cb(BaseCallback):
        def _on_step(self) -> bool:
            if progress is not None:
                progress(min(self.num_timesteps, steps), steps)
            return True

    policy = "MlpPolicy" if len(observation) == 1 else "MultiInputPolicy"
    model = PPO(policy, env, seed=seed, n_steps=min(n_steps, max(steps, 64)), batch_size=64, verbose=0, device="cpu")
    # SB3's default logger makes an empty SB3-<date> folder in the system temp dir on every run
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=steps, callback=_Cb())
    env.close()
    src = str(scenario) if isinstance(scenario, str | os.PathLike) else type(scenario).__name__
    save_policy(model.policy, outp, algo="PPO", observation=list(observation), action_units="normalized",
                provenance=_provenance(created_by="loopdrive train ppo", scenario=src, steps=int(steps), seed=int(seed)))
    return outp


def convert_sb3_zip(
    zip_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    trust_pickle: bool,
    algo: str = "PPO",
    observation: Sequence[str] = ("state",),
    action_units: str = "normalized",
) -> Path:
    """Re-export a stable-baselines3 zip (an on-policy actor-critic: PPO or A2C) as loopdrive's
    safe format at ``out`` (``.safetensors`` + ``.json``). Unpickles the zip once, so only with
    ``trust_pickle``; afterwards the policy loads without it. Returns ``out``."""
    if algo not in ("PPO", "A2C"):
        raise ScenarioError(f"expected PPO or A2C (actor-critic policies), got {algo!r}", field="algo")
    if action_units not in ("normalized", "si"):
        raise ScenarioError(f"expected 'normalized' or 'si', got {action_units!r}", field="action_units")
    if not observation:
        raise ScenarioError("expected at least one observation kind", field="observation")
    from agents.sb3_format import save_policy

    outp = _check_out(out)
    model = load_sb3(zip_path, algo, trust_pickle=trust_pickle)
    digest = hashlib.sha256(Path(zip_path).read_bytes()).hexdigest()
    try:
        save_policy(model.policy, outp, algo=algo, observation=list(observation), action_units=action_units,
                    provenance=_provenance(created_by="loopdrive convert-sb3", converted_from=str(zip_path), zip_sha256=digest))
    except ValueError as exc:
        raise BundleError(f"cannot describe this policy in loopdrive's format ({exc})", file=zip_path) from None
    return outp


class PPOTrainer(RLTrainer):
    """``ppo``: the :class:`~sim.planning.training.RLTrainer` of the ``sb3`` planner (registered
    through the ``loopdrive.trainers`` entry-point group): :func:`train_ppo` and
    :func:`convert_sb3_zip` behind the planning interface; weights checked with
    :func:`agents.sb3_format.load_policy`."""

    name = "ppo"
    planner = SB3Planner.name

    def check_weights(self, path: str | os.PathLike[str]) -> None:
        from agents.sb3_format import load_policy

        load_policy(path)

    def planner_params(self, weights: str | os.PathLike[str]) -> dict[str, Any]:
        return {"path": str(weights)}

    def train(
        self,
        scenario: Any,
        steps: int,
        out: str | os.PathLike[str],
        *,
        observation: Sequence[str] = ("state",),
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        return train_ppo(scenario, steps, out, observation=observation, seed=seed, progress=progress)

    def import_policy(self, path: str | os.PathLike[str], out: str | os.PathLike[str], *, trust_pickle: bool, **options: Any) -> Path:
        """``options``: ``algo`` (PPO | A2C), ``observation`` (kinds), ``action_units``
        (normalized | si); see :func:`convert_sb3_zip`."""
        return convert_sb3_zip(path, out, trust_pickle=trust_pickle, **options)
