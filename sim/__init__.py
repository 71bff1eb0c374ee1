"""loopdrive simulator core."""


def _register_gymnasium_envs() -> None:
    """Register ``loopdrive/ClosedLoop-v0`` with Gymnasium (lazy entry points; harmless to repeat)."""
    try:
        from gymnasium.envs.registration import register, registry
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    if "loopdrive/ClosedLoop-v0" not in registry:
        register(id="loopdrive/ClosedLoop-v0", entry_point="sim.env:ClosedLoopEnv", vector_entry_point="sim.env:ClosedLoopVectorEnv")


_register_gymnasium_envs()
