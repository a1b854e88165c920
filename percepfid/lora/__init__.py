"""LoRA adapters for super-resolution networks (built on peft).

Presets place adapters by structure (``'swinir-mlp'``, ``'rrdb-convs'``, ``'auto'``); a regex,
a list of names or a predicate covers anything else. Requires ``pip install 'percepfid[lora]'``.
"""

from ._core import (
    has_lora,
    inject_lora,
    load_lora,
    lora_layer_names,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    save_lora,
)
from ._targets import LORA_PRESETS, PRESET_RANKS, LoRATargets, find_lora_targets

__all__ = [
    "LORA_PRESETS",
    "PRESET_RANKS",
    "LoRATargets",
    "find_lora_targets",
    "has_lora",
    "inject_lora",
    "load_lora",
    "lora_layer_names",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
    "save_lora",
]
