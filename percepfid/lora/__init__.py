"""LoRA adapters for super-resolution networks, built on peft (``pip install
'percepfid[lora]'``; ``'percepfid[sr]'`` for spandrel checkpoints). Presets: see
:mod:`percepfid.lora._targets`."""

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
from ._models import load_sr_model, save_sr_model
from ._targets import (
    LORA_FAMILIES,
    LORA_PRESETS,
    PRESET_ALIASES,
    PRESET_RANKS,
    LoRATargets,
    find_lora_targets,
    lora_family,
)

__all__ = [
    "LORA_FAMILIES",
    "LORA_PRESETS",
    "PRESET_ALIASES",
    "PRESET_RANKS",
    "LoRATargets",
    "find_lora_targets",
    "load_sr_model",
    "lora_family",
    "has_lora",
    "inject_lora",
    "load_lora",
    "lora_layer_names",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
    "save_lora",
    "save_sr_model",
]
