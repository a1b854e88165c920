"""Which layers ``targets='auto'`` adapts on every SR architecture of spandrel's main package.

Prints the Markdown table of the README's "LoRA on the SR model zoo" section: for each
architecture, the preset family ``'auto'`` picks, how many layers it adapts and with which
rank, the adapters' parameters as a percentage of the network (both at the reference
configuration of the released models, see ``sr_zoo.py``), and whether merging round-trips:
on the tiny configuration, adapters with non-zero weights are merged, the merged state dict
is written to a ``.safetensors`` file, and spandrel loads it back as the same architecture
giving the same outputs as the adapted network.

    python benchmarks/lora_coverage.py            # the table (about a minute on one core)

tests/test_lora_zoo.py checks that the README holds exactly this table.
All weights are random; the table is about structure, not quality.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sr_zoo import ZooEntry, first_output, zoo  # noqa: E402

from percepfid.lora import (  # noqa: E402
    PRESET_RANKS,
    find_lora_targets,
    inject_lora,
    lora_family,
    lora_parameters,
    merge_lora,
)

HEADER = (
    "| architecture | family (`'auto'`) | adapted layers | rank | adapter params (% of network) "
    "| merge round-trip |\n|---|---|---|---|---|---|"
)


def adapter_size(net: torch.nn.Module, layers: list[str], rank: int) -> int:
    """Parameters of rank-``rank`` LoRA adapters on ``layers``: ``A`` maps the layer's input
    (with its kernel) to ``rank`` channels, ``B`` maps those to the output (peft's layout)."""
    count = 0
    for name in layers:
        layer = net.get_submodule(name)
        if isinstance(layer, torch.nn.Linear):
            count += rank * (layer.in_features + layer.out_features)
        else:
            kernel = layer.weight[0, 0].numel()
            count += rank * (layer.in_channels * kernel + layer.out_channels)
    return count


def build_reference(entry: ZooEntry) -> torch.nn.Module:
    """The reference network; on the meta device (no memory, no init) where it builds."""
    try:
        with torch.device("meta"):
            return entry.reference()
    except Exception:  # some constructors read tensor values (drop-path schedules)
        torch.manual_seed(0)
        return entry.reference()


def reference_row(entry: ZooEntry) -> tuple[str, str, int, int, str]:
    """(name, family, adapted layers, rank, adapter parameters as % of the network) at the
    reference configuration."""
    net = build_reference(entry)
    total = sum(p.numel() for p in net.parameters())
    family = lora_family(net)
    layers = find_lora_targets(net, "auto")
    rank = PRESET_RANKS[family]
    share = 100 * adapter_size(net, layers, rank) / total
    return entry.name, str(family), len(layers), rank, f"{share:.1f}%"


def format_row(row: tuple, round_trip: bool) -> str:
    name, family, layers, rank, share = row
    return f"| {name} | {family} | {layers} | {rank} | {share} | {'yes' if round_trip else 'NO'} |"


def merge_round_trip(entry: ZooEntry, *, tol: float = 1e-4) -> bool:
    """Tiny network: perturbed adapters, merge, write, reload through spandrel, compare."""
    import spandrel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = entry.tiny()
    inject_lora(net, "auto")
    with torch.no_grad():
        for parameter in lora_parameters(net):
            parameter.normal_(std=0.05)
    x = torch.rand(1, 3, entry.size, entry.size)
    # a re-parameterised network shows unmerged adapters in train() mode only
    net.train(entry.reparam)
    with torch.no_grad():
        adapted = first_output(net(x.clone()))
        merged = merge_lora(net).eval()
        expected = first_output(merged(x.clone()))
    if (expected - adapted).abs().max() > tol * max(1.0, adapted.abs().max().item()):
        return False
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "merged.safetensors"
        save_file({k: v.contiguous() for k, v in merged.state_dict().items()}, str(path))
        descriptor = spandrel.ModelLoader().load_from_file(path)
    reloaded = descriptor.model.eval()
    if type(reloaded) is not type(merged):
        return False
    with torch.no_grad():
        got = first_output(reloaded(x.clone()))
    return bool(torch.allclose(got, expected, rtol=1e-5, atol=1e-5))


def table() -> str:
    rows = [HEADER]
    for entry in zoo().values():
        rows.append(format_row(reference_row(entry), merge_round_trip(copy.copy(entry))))
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
