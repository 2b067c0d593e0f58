"""Which nodes and GPUs the centre has: detected from nvidia-smi, or declared in a spec string."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MIN_GPUS = 1
MAX_GPUS = 64
MAX_NODE_COUNT = 10_000

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"]
NVIDIA_SMI_TIMEOUT_S = 10.0

_EXPECTED = "expected NAMExGPUSxMODEL or COUNTxGPUSxMODEL"
# Greedy NAME so that names containing 'x' ("box1x8xH800") split at the last 'x<digits>x'.
# [0-9], not \d: \d also matches other scripts' digits ("٨").
_SPEC_RE = re.compile(r"^(?P<name>.+)x(?P<gpus>[0-9]+)x(?P<model>.+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Leading words of marketing names that say nothing about the chip.
_BRAND_WORDS = {"nvidia", "tesla", "geforce", "quadro"}
# Families whose model number is a separate word: "RTX 4090" -> "RTX4090".
_PREFIX_FAMILIES = {"rtx", "gtx", "titan"}


@dataclass(frozen=True)
class Node:
    name: str
    gpu_model: str
    gpus: int
    # Physical indices for CUDA_VISIBLE_DEVICES; empty means range(gpus).
    gpu_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"node {self.name!r}: GPU count must not be negative")
        if not self.gpu_indices:
            # Frozen dataclass: filling in the default needs object.__setattr__.
            object.__setattr__(self, "gpu_indices", tuple(range(self.gpus)))
        if len(self.gpu_indices) != self.gpus:
            raise ValueError(
                f"node {self.name!r}: {self.gpus} GPUs but {len(self.gpu_indices)} indices"
            )
        if len(set(self.gpu_indices)) != len(self.gpu_indices):
            raise ValueError(f"node {self.name!r}: duplicate GPU indices {self.gpu_indices}")


def parse_inventory(spec: str) -> list[Node]:
    """Parse "node1x8xH800,node2x8xH800" or "2x8xH800" (nodes named node1, node2)."""
    if not spec.strip():
        raise ValueError(f"empty inventory spec: {_EXPECTED}[,...]")
    nodes: list[Node] = []
    generated = 0  # numbering continues across COUNT parts: "2x8xH800,1x4xA100" -> node1..3
    for raw_part in spec.split(","):
        part = raw_part.strip()
        match = _SPEC_RE.match(part)
        if not part or match is None:
            raise ValueError(f"bad node spec {part!r}: {_EXPECTED}")
        name, gpus_text, model = match["name"], match["gpus"], match["model"]
        gpus = int(gpus_text)
        if not MIN_GPUS <= gpus <= MAX_GPUS:
            raise ValueError(
                f"bad node spec {part!r}: GPUs per node must be {MIN_GPUS}..{MAX_GPUS}, got {gpus}"
            )
        if not _MODEL_RE.match(model):
            raise ValueError(
                f"bad node spec {part!r}: GPU model {model!r} must be letters, digits, '.', "
                "'_' or '-'"
            )
        if name.isascii() and name.isdigit():  # "²".isdigit() is true, and int("²") fails
            count = int(name)
            if not 1 <= count <= MAX_NODE_COUNT:
                raise ValueError(
                    f"bad node spec {part!r}: node count must be 1..{MAX_NODE_COUNT}, got {count}"
                )
            for _ in range(count):
                generated += 1
                nodes.append(Node(name=f"node{generated}", gpu_model=model, gpus=gpus))
        elif _NAME_RE.match(name):
            nodes.append(Node(name=name, gpu_model=model, gpus=gpus))
        else:
            raise ValueError(
                f"bad node spec {part!r}: node name {name!r} must start with a letter or digit "
                "and contain only letters, digits, '.', '_' or '-'"
            )
    _check_unique(nodes)
    return nodes


def normalise_gpu_model(marketing_name: str) -> str:
    """Short model name: 'NVIDIA H100 80GB HBM3' -> 'H100', 'GeForce RTX 4090' -> 'RTX4090'."""
    words = marketing_name.split()
    while words and words[0].lower() in _BRAND_WORDS:
        words = words[1:]
    if not words:
        return _alnum(marketing_name) or "unknown"
    # Form-factor and memory suffixes are joined with '-': "A100-SXM4-80GB" -> "A100".
    model = words[0].split("-")[0]
    if model.lower() in _PREFIX_FAMILIES and len(words) > 1:
        model += words[1].split("-")[0]
        if len(words) > 2 and words[2].lower() == "ti":
            model += "Ti"
    return _alnum(model) or "unknown"


def _alnum(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _run_nvidia_smi(argv: list[str]) -> str:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True
    )
    return result.stdout


def detect_nvidia_gpus(run: Callable[[list[str]], str] | None = None) -> list[Node]:
    """GPUs on this host as nodes (one per GPU model); [] if nvidia-smi is missing or fails."""
    runner = run if run is not None else _run_nvidia_smi
    try:
        output = runner(list(NVIDIA_SMI_QUERY))
    except (OSError, subprocess.SubprocessError):
        return []
    by_model: dict[str, list[int]] = {}
    for line in output.splitlines():
        index_text, sep, name = line.partition(",")
        index_text, name = index_text.strip(), name.strip()
        # Skip anything that is not "index, name" (warnings, blank lines).
        if not sep or not index_text.isdigit() or not name:
            continue
        by_model.setdefault(normalise_gpu_model(name), []).append(int(index_text))
    host = socket.gethostname()
    single = len(by_model) == 1
    return [
        Node(
            name=host if single else f"{host}-{model}",
            gpu_model=model,
            gpus=len(indices),
            gpu_indices=tuple(sorted(indices)),
        )
        for model, indices in sorted(by_model.items())
    ]


def load_inventory(spec: str | None, detect: bool = True) -> list[Node]:
    """Real GPUs when detected, else the parsed spec; ValueError when neither gives a node."""
    nodes = detect_nvidia_gpus() if detect else []
    if not nodes and spec is not None and spec.strip():
        nodes = parse_inventory(spec)
    if not nodes:
        where = "no NVIDIA GPUs detected and " if detect else ""
        raise ValueError(f"empty inventory: {where}no inventory spec given ({_EXPECTED})")
    _check_unique(nodes)
    return nodes


def _check_unique(nodes: Iterable[Node]) -> None:
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            raise ValueError(f"duplicate node name {node.name!r} in inventory")
        seen.add(node.name)
