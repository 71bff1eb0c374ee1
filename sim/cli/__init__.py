"""The ``loopdrive`` command line. Subcommands live in one module per area and register on import."""

# Subcommand modules (each adds its commands to ``app`` on import).
import sim.cli.agents_cmds
import sim.cli.env_cmds
import sim.cli.export_cmds
import sim.cli.import_cmds
import sim.cli.loop_cmds
import sim.cli.ncap_cmds
import sim.cli.realism_cmds
import sim.cli.recon_cmds
import sim.cli.render_cmds
import sim.cli.scenario_cmds
import sim.cli.synth_cmds
import sim.cli.view_cmds  # noqa: F401
from sim.cli import log_cmds  # noqa: F401
from sim.cli._app import app

__all__ = ["app"]


def main() -> None:  # pragma: no cover - console entry
    app()
