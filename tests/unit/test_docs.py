"""The README stays true: every setting and every command is documented there."""

from __future__ import annotations

from pathlib import Path

import typer.main

from aisc.cli.main import app
from aisc.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text()


def command_paths(group: typer.Typer) -> list[str]:
    click_group = typer.main.get_command(group)
    paths: list[str] = []

    def walk(command, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for name, sub in getattr(command, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, f"{prefix}{name} ")
            else:
                paths.append(f"{prefix}{name}")

    walk(click_group, "")
    return paths


def test_every_setting_is_in_the_readme() -> None:
    missing = [n for n in Settings.model_fields if f"AISC_{n.upper()}" not in README]
    assert missing == []


def test_every_command_is_in_the_readme() -> None:
    paths = command_paths(app)
    assert {"serve", "demo", "db upgrade", "ledger verify", "submit"} <= set(paths)
    missing = []
    for path in paths:
        group, _, leaf = path.rpartition(" ")
        # a group's commands may be listed together, as in `aisc scheme create/list`
        if f"aisc {path}" not in README and not (
            group and f"aisc {group} " in README and leaf in README
        ):
            missing.append(path)
    assert missing == []


def test_the_readme_gives_the_two_set_up_commands_and_ci_runs_the_test_one() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
    ci = (Path(__file__).parents[2] / ".ci" / "run").read_text()
    assert "scripts/test" in ci
