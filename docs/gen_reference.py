"""Generate the scenario-YAML and CLI reference pages at docs build time (mkdocs-gen-files).

The scenario reference comes from the pydantic model's JSON Schema (``sim.scenario.json_schema``)
and the CLI reference from the typer application's click command tree, so neither can drift from
the code.
"""

from __future__ import annotations

import json
from typing import Any

import mkdocs_gen_files
import typer
from typer.testing import CliRunner

from sim.cli import app
from sim.scenario import json_schema
from sim.scenario_limits import limits_markdown


def _type_of(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].split('/')[-1]}](#{prop['$ref'].split('/')[-1].lower()})"
    if "anyOf" in prop:
        return " or ".join(_type_of(p) for p in prop["anyOf"])
    if "oneOf" in prop:
        return " or ".join(_type_of(p) for p in prop["oneOf"])
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    t = prop.get("type", "any")
    if t == "array" and "items" in prop:
        return f"list of {_type_of(prop['items'])}"
    return str(t)


def _scenario_page() -> str:
    schema = json_schema()
    lines = [
        "# Scenario YAML reference",
        "",
        "Generated from the pydantic model in `sim/scenario/schema.py` (`loopdrive schema` prints the same JSON Schema",
        "for editors). Unknown keys are errors (`extra=\"forbid\"`).",
        "",
    ]

    def section(name: str, s: dict[str, Any]) -> None:
        lines.extend([f"## {name}", ""])
        if s.get("description"):
            lines.extend([s["description"].strip(), ""])
        props = s.get("properties", {})
        if props:
            req = set(s.get("required", []))
            lines.extend(["| field | type | required | default | description |", "|---|---|---|---|---|"])
            for k, p in props.items():
                default = f"`{json.dumps(p['default'])}`" if "default" in p else ""
                desc = (p.get("description") or "").replace("\n", " ").replace("|", "\\|")
                typ = _type_of(p).replace("|", "\\|")
                lines.append(f"| `{k}` | {typ} | {'yes' if k in req else ''} | {default} | {desc} |")
            lines.append("")

    section(schema.get("title", "Scenario"), schema)
    for name, s in sorted(schema.get("$defs", {}).items()):
        section(name, s)
    lines.append(limits_markdown())
    lines.extend(["## JSON Schema", "", "```json", json.dumps(schema, indent=2), "```", ""])
    return "\n".join(lines)


def _cli_page() -> str:
    root = typer.main.get_command(app)
    runner = CliRunner()
    lines = ["# Command-line reference", "", "Generated from the `loopdrive` typer application (`--help` of every command).", ""]

    def walk(cmd: Any, path: list[str]) -> None:
        res = runner.invoke(app, [*path[1:], "--help"], env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
        lines.extend([f"## `{' '.join(path)}`", "", "```text", res.output.rstrip(), "```", ""])
        for sub, child in sorted(getattr(cmd, "commands", {}).items()):  # groups (typer vendors click)
            walk(child, [*path, sub])

    walk(root, ["loopdrive"])
    return "\n".join(lines)


with mkdocs_gen_files.open("reference/scenario.md", "w") as f:
    f.write(_scenario_page())
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(_cli_page())
