"""Fuzzing the configuration loaders with hypothesis: settings from AISC_* environment variables
(and what the runtime derives from them: the scheduler's policy and weights, the backend, the
inventory), inventory specs, and the CLI's config file.

Whatever is set, each loader gives a usable value or its own clear error: pydantic's
ValidationError or the project's ConfigError for settings, ValueError naming the bad part for
the policy and the inventory, ApiError for the CLI config file. Never another exception, and
from the CLI never a traceback: one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from aisc.backends.inventory import MAX_GPUS, Node, load_inventory, parse_inventory
from aisc.cli.client import ApiError, load_config, resolve_target
from aisc.cli.main import app
from aisc.config import ConfigError, Settings, get_settings
from aisc.scheduler.config import MAX_WEIGHT, PolicyConfig, PriorityWeights, preset
from tests.fuzz.budget import fuzz_settings

# Python's own messages: an error that says these has escaped the loader's checks.
RAW = re.compile(
    r"invalid literal|could not convert|too large to convert|Exceeds the limit|"
    r"object has no attribute|unsupported operand|not supported between"
)


def one_clear_line(error: BaseException) -> str:
    message = str(error)
    assert message.strip() and "\n" not in message, message
    assert not RAW.search(message), message
    return message


# -- values -----------------------------------------------------------------------------------

env_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
numbers = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "0.5",
            "-0.0",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "1e308",
            " 3 ",
            "1_000",
            "٣",
            "²",
            "0x10",
            "9" * 30,
            "99999999999",
            "3e10",
            "",
            "true",
        ]
    ),
    st.integers(-(10**12), 10**12).map(str),
    st.integers(0, 40).map(lambda exponent: str(10**exponent)),  # every order of magnitude
    st.floats().map(repr),
)
booleans = st.sampled_from(["true", "false", "1", "0", "yes", "no", "on", "TRUE", "", "maybe"])
weights = st.lists(
    st.tuples(
        st.sampled_from(["age", "fairshare", "size", "qos", "AGE", " age", "bogus", ""]),
        st.sampled_from(["=", "=", "", "=="]),
        st.one_of(numbers, st.integers(0, 2**40).map(str)),
    ).map("".join),
    max_size=5,
).map(",".join)


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    # A middle value: hypothesis draws the ends of a range far more often than the rest.
    return draw(st.integers(0, one_in - 1)) == one_in // 2


@st.composite
def inventory_part(draw: st.DrawFn) -> str:
    """Mostly a well-formed NAMExGPUSxMODEL or COUNTxGPUSxMODEL, with one thing often odd."""
    name = draw(st.one_of(st.integers(1, 12).map(str), st.sampled_from(["node1", "gpu-a.1"])))
    gpus = draw(st.integers(1, 64).map(str))
    model = draw(st.sampled_from(["H800", "A100-80GB", "h100_sxm"]))
    seps = ["x", "x"]
    odd = draw(st.sampled_from(["name", "gpus", "model", "sep", "none"]))
    if odd == "name":
        name = draw(
            st.one_of(
                st.sampled_from(["0", "-1", "10000", "10001", "007", "99999999999999999999"]),
                st.sampled_from(["²", "٣", "1²", "box1x", "x", "", "a b", "n" * 120, ".a"]),
                st.text(max_size=6),
            )
        )
    elif odd == "gpus":
        gpus = draw(st.sampled_from(["0", "65", "-1", "", "٨", "8.0", "1e3", "²", "9" * 30]))
    elif odd == "model":
        model = draw(st.one_of(st.sampled_from(["", "H800\n", "-H", "H 800", "é"]), st.text()))
    elif odd == "sep":
        seps[draw(st.integers(0, 1))] = draw(st.sampled_from(["X", "", "xx", "×"]))
    return f"{name}{seps[0]}{gpus}{seps[1]}{model}"


@st.composite
def inventory_specs(draw: st.DrawFn) -> str:
    parts = draw(st.lists(inventory_part(), min_size=1, max_size=4))
    joiner = ", " if not rarely(draw, 5) else draw(st.sampled_from([",", ",,", ";"]))
    return joiner.join(parts)


FIELD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "inventory": st.one_of(inventory_specs(), env_text),
    "priority_weights": st.one_of(weights, env_text),
    "policy": st.one_of(st.sampled_from(["aisc", "fifo", "backfill", "AISC", "srtf"]), env_text),
    "backend": st.one_of(st.sampled_from(["local", "slurm", "Local"]), env_text),
    "notify_low_balance_percents": st.one_of(st.lists(numbers, max_size=3).map(",".join), env_text),
    "log_format": st.sampled_from(["json", "text", "JSON", "xml", ""]),
    "log_level": st.sampled_from(["DEBUG", "info", "WARN", "", "TRACE"]),
}


def value_for(name: str) -> st.SearchStrategy[str]:
    if name in FIELD_VALUES:
        return FIELD_VALUES[name]
    annotation = str(Settings.model_fields[name].annotation)
    if "bool" in annotation:
        return booleans
    if "float" in annotation or "int" in annotation:
        return numbers
    return env_text


settings_env = st.lists(
    st.sampled_from(sorted(Settings.model_fields)), min_size=1, max_size=4, unique=True
).flatmap(lambda names: st.fixed_dictionaries({f"AISC_{n.upper()}": value_for(n) for n in names}))


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly these AISC_* variables for the duration; the rest of the environment kept."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("AISC_")]:
        del os.environ[key]
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- checks on what loads ---------------------------------------------------------------------


def check_settings(settings: Settings) -> None:
    """Numbers the runtime sleeps on, divides by or adds to dates are usable."""
    for name, value in settings.model_dump().items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
    for interval in (
        settings.controller_interval_s,
        settings.notify_interval_s,
        settings.slurm_sync_interval_s,
    ):
        assert 0 < interval <= threading.TIMEOUT_MAX  # Event.wait() takes it
    assert settings.kill_grace_s >= 0
    assert settings.session_hours > 0
    assert datetime.now(UTC) + timedelta(hours=settings.session_hours)  # a sign-in's expiry
    assert datetime.now(UTC) + timedelta(days=settings.notify_ending_days)
    assert datetime.now(UTC) + timedelta(days=settings.notify_report_reminder_days)
    assert 1 <= settings.port <= 65535


def check_policy(config: PolicyConfig) -> None:
    for value in vars(config.weights).values():
        assert isinstance(value, int) and 0 <= value <= MAX_WEIGHT
    assert math.isfinite(config.max_age_s) and config.max_age_s > 0
    assert math.isfinite(config.usage_half_life_s) and config.usage_half_life_s > 0
    assert math.isfinite(config.min_runtime_s) and config.min_runtime_s >= 0
    assert config.reservations >= 0


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_inventory(nodes: list[Node]) -> None:
    assert nodes
    assert len({n.name for n in nodes}) == len(nodes)
    for node in nodes:
        assert 1 <= node.gpus <= MAX_GPUS
        assert NAME.match(node.name) and NAME.match(node.gpu_model) and "\n" not in node.gpu_model
        assert node.gpu_indices == tuple(range(node.gpus))


def loads_or_says_why(load: Callable[[], Any], check: Callable[[Any], None]) -> None:
    try:
        value = load()
    except ValueError as error:
        one_clear_line(error)
    else:
        check(value)


# -- the tests --------------------------------------------------------------------------------


@fuzz_settings(300)
@given(env=settings_env)
def test_settings_from_the_environment(env: dict[str, str]) -> None:
    with environment(env):
        try:
            settings = get_settings()
        except ConfigError as error:
            message = one_clear_line(error)
            assert any(name in message for name in env), message  # names what to fix
            return
    check_settings(settings)
    loads_or_says_why(settings.policy_config, check_policy)
    loads_or_says_why(settings.validated_backend, lambda backend: None)
    loads_or_says_why(settings.low_balance_percents, lambda percents: None)
    loads_or_says_why(lambda: load_inventory(settings.inventory, detect=False), check_inventory)


@fuzz_settings(300)
@given(name=st.sampled_from(sorted(Settings.model_fields)), data=st.data())
def test_each_setting_alone(name: str, data: st.DataObject) -> None:
    # One setting at a time, as an init argument: no other bad value hides what it does.
    value = data.draw(st.one_of(value_for(name), numbers), "value")
    with environment({}):
        try:
            settings = Settings(**{name: value})  # type: ignore[arg-type]
        except ValidationError as error:
            assert error.errors()
            return
    check_settings(settings)
    loads_or_says_why(settings.policy_config, check_policy)
    loads_or_says_why(lambda: load_inventory(settings.inventory, detect=False), check_inventory)


@fuzz_settings(300)
@given(spec=st.one_of(inventory_specs(), env_text))
def test_inventory_specs(spec: str) -> None:
    loads_or_says_why(lambda: parse_inventory(spec), check_inventory)
    loads_or_says_why(lambda: load_inventory(spec, detect=False), check_inventory)


@fuzz_settings(100)
@given(
    name=st.one_of(st.sampled_from(["aisc", "fifo", "backfill"]), env_text),
    values=st.lists(st.integers(-(2**40), 2**40), min_size=4, max_size=4),
)
def test_policy_presets_and_weights(name: str, values: list[int]) -> None:
    loads_or_says_why(lambda: preset(name), check_policy)
    loads_or_says_why(lambda: preset("aisc").with_(weights=PriorityWeights(*values)), check_policy)


# -- the CLI's config file --------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
config_files = st.one_of(
    st.binary(max_size=100),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"url": st.one_of(st.text(max_size=20), st.integers()), "token": json_values}
    ).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.sampled_from([b"", b"\xef\xbb\xbf{}", b'{"url": "http://x"', b"\xff\xfe{}", b"{}" * 2]),
)


@pytest.fixture
def config_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cli.json"
    with environment({"AISC_CONFIG": str(path)}):
        yield path


@fuzz_settings(300)
@given(data=config_files)
def test_the_cli_config_file(config_file: Path, data: bytes) -> None:
    config_file.write_bytes(data)
    try:
        config = load_config()
    except ApiError as error:
        assert str(config_file) in one_clear_line(error)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in config.items())
    target = resolve_target()
    assert target.url and (target.token is None or isinstance(target.token, str))


# -- the CLI itself: one line, non-zero exit, no traceback -------------------------------------


def run_cli(args: list[str], env: dict[str, str], home: Path) -> tuple[int, str]:
    # Only these AISC_* variables: CliRunner applies the rest of the environment as it is.
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("AISC_")}
    result = CliRunner().invoke(app, args, env={**unset, "AISC_HOME": str(home), **env})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # escaped the command: the user would see a traceback
    return result.exit_code, result.output  # stdout and stderr, as a terminal shows them


def assert_one_line_error(code: int, output: str) -> None:
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output


@fuzz_settings(12)
@given(env=settings_env)
def test_cli_refuses_bad_settings_in_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    with environment(env):
        try:
            get_settings()
        except ConfigError:
            pass
        else:
            assume(False)  # only settings that are refused: the commands would then run
    commands = [
        ["serve"],
        ["db", "current"],
        ["admin", "create-user", "Ann", "ann@x.test"],
        ["slurm", "sync", "--dry-run"],
    ]
    for command in commands:
        assert_one_line_error(*run_cli(command, env, tmp_path))


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe[", b"[1, 2]", b"{", b"[" * 100_000 + b"]" * 100_000],
    ids=["not-utf8", "not-an-object", "truncated", "deeply-nested"],
)
def test_cli_refuses_a_bad_config_file_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "cli.json"
    path.write_bytes(data)
    code, output = run_cli(["whoami"], {"AISC_CONFIG": str(path)}, tmp_path)
    assert_one_line_error(code, output)
    assert "cannot read the CLI config" in output
