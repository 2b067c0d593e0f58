from __future__ import annotations

import socket
import subprocess

import pytest

from aisc.backends import inventory
from aisc.backends.inventory import (
    Node,
    detect_nvidia_gpus,
    load_inventory,
    normalise_gpu_model,
    parse_inventory,
)

# -- parse_inventory -------------------------------------------------------------------------


def test_parse_named_nodes() -> None:
    nodes = parse_inventory("node1x8xH800,gpu-b.labx4xA100")
    assert nodes == [
        Node("node1", "H800", 8, (0, 1, 2, 3, 4, 5, 6, 7)),
        Node("gpu-b.lab", "A100", 4, (0, 1, 2, 3)),
    ]


def test_parse_count_form_names_nodes_sequentially() -> None:
    nodes = parse_inventory("2x8xH800")
    assert [(n.name, n.gpus, n.gpu_model) for n in nodes] == [
        ("node1", 8, "H800"),
        ("node2", 8, "H800"),
    ]
    assert nodes[1].gpu_indices == tuple(range(8))


def test_parse_count_numbering_continues_across_parts() -> None:
    nodes = parse_inventory("2x8xH800, 1x4xA100")
    assert [(n.name, n.gpu_model) for n in nodes] == [
        ("node1", "H800"),
        ("node2", "H800"),
        ("node3", "A100"),
    ]


def test_parse_name_containing_x() -> None:
    (node,) = parse_inventory("box1x2xRTX4090")
    assert (node.name, node.gpus, node.gpu_model) == ("box1", 2, "RTX4090")


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("x8xH800", "bad node spec 'x8xH800': expected NAMExGPUSxMODEL or COUNTxGPUSxMODEL"),
        ("node1x8x", "bad node spec 'node1x8x': expected"),
        ("node1xeightxH800", "bad node spec 'node1xeightxH800': expected"),
        ("node1-8-H800", "bad node spec 'node1-8-H800': expected"),
        ("node1x8xH800,", "bad node spec '': expected"),
        ("node1x0xH800", "GPUs per node must be 1..64, got 0"),
        ("node1x65xH800", "GPUs per node must be 1..64, got 65"),
        ("0x8xH800", "node count must be"),
        ("node1x8xH 800", "GPU model 'H 800'"),
        ("no/dex8xH800", "node name 'no/de'"),
        ("node1x8xH800,node1x4xA100", "duplicate node name 'node1'"),
        ("node1x8xH800,1x8xH800", "duplicate node name 'node1'"),
        ("   ", "empty inventory spec"),
    ],
)
def test_parse_rejects_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_inventory(spec)
    assert fragment in str(info.value)


def test_node_defaults_and_validates_indices() -> None:
    assert Node("n", "H100", 2).gpu_indices == (0, 1)
    assert Node("n", "H100", 2, (4, 6)).gpu_indices == (4, 6)
    with pytest.raises(ValueError, match="2 GPUs but 1 indices"):
        Node("n", "H100", 2, (3,))
    with pytest.raises(ValueError, match="duplicate GPU indices"):
        Node("n", "H100", 2, (3, 3))


# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marketing", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H800", "H800"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA GeForce GTX 1080 Ti", "GTX1080Ti"),
        ("Tesla T4", "T4"),
        ("NVIDIA L40S", "L40S"),
    ],
)
def test_normalise_gpu_model(marketing: str, model: str) -> None:
    assert normalise_gpu_model(marketing) == model


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(socket, "gethostname", lambda: "gpuhost")
    return "gpuhost"


def test_detect_groups_gpus_into_one_node(host: str) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str]) -> str:
        calls.append(argv)
        return "0, NVIDIA H100 80GB HBM3\n1, NVIDIA H100 80GB HBM3\n3, NVIDIA H100 80GB HBM3\n"

    nodes = detect_nvidia_gpus(fake_run)
    assert calls == [["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"]]
    # Index 2 is missing (e.g. hidden by the admin): the real indices must be kept.
    assert nodes == [Node(host, "H100", 3, (0, 1, 3))]


def test_detect_mixed_models_one_node_per_model(host: str) -> None:
    out = "0, NVIDIA A100-SXM4-80GB\n1, NVIDIA GeForce RTX 4090\n2, NVIDIA A100-SXM4-80GB\n"
    nodes = detect_nvidia_gpus(lambda argv: out)
    assert nodes == [
        Node(f"{host}-A100", "A100", 2, (0, 2)),
        Node(f"{host}-RTX4090", "RTX4090", 1, (1,)),
    ]


def test_detect_ignores_junk_lines(host: str) -> None:
    out = "WARNING: something odd\n\n0, NVIDIA H800\n"
    assert detect_nvidia_gpus(lambda argv: out) == [Node(host, "H800", 1, (0,))]


def test_detect_missing_nvidia_smi_gives_empty() -> None:
    def missing(argv: list[str]) -> str:
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    assert detect_nvidia_gpus(missing) == []


def test_detect_failing_nvidia_smi_gives_empty() -> None:
    def failing(argv: list[str]) -> str:
        raise subprocess.CalledProcessError(9, argv, "", "NVIDIA-SMI has failed")

    assert detect_nvidia_gpus(failing) == []
    assert detect_nvidia_gpus(lambda argv: "No devices were found\n") == []


def test_default_runner_handles_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent-dir")
    assert detect_nvidia_gpus() == []


# -- load_inventory ----------------------------------------------------------------------------


def test_load_prefers_detected_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    real = [Node("h", "H100", 8)]
    monkeypatch.setattr(inventory, "detect_nvidia_gpus", lambda: real)
    assert load_inventory("2x8xH800") == real
    assert [n.name for n in load_inventory("2x8xH800", detect=False)] == ["node1", "node2"]


def test_load_falls_back_to_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "detect_nvidia_gpus", lambda: [])
    assert [n.name for n in load_inventory("a1x2xL40S")] == ["a1"]


def test_load_without_any_nodes_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory, "detect_nvidia_gpus", lambda: [])
    with pytest.raises(ValueError, match="empty inventory"):
        load_inventory(None)
    with pytest.raises(ValueError, match="empty inventory"):
        load_inventory("", detect=False)


def test_load_rejects_duplicate_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        inventory, "detect_nvidia_gpus", lambda: [Node("h", "H100", 1), Node("h", "A100", 1)]
    )
    with pytest.raises(ValueError, match="duplicate node name 'h'"):
        load_inventory(None)
