"""Hook names of the SAE publishers, mapped to the block whose output they read."""

from __future__ import annotations

import re

from saeembed.errors import SAEError

# Each pattern names the *output of block L* (the residual stream after it) in one publisher's
# convention. `blocks.L.hook_resid_pre` is the input of block L, i.e. the output of block L-1.
_RESID_POST = (
    re.compile(r"^blocks\.(\d+)\.hook_resid_post$"),  # SAELens / TransformerLens
    re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.output)?$"),  # sparsify, Gemma Scope v2, Goodfire
    re.compile(r"^(?:model\.)?layers\.(\d+)\.hook_resid_post$"),
    re.compile(r"^resid_post_layer_(\d+)$"),  # dictionary_learning
    re.compile(r"^transformer\.h\.(\d+)$"),  # GPT-2 module path
)
_RESID_PRE = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")


def layer_from_hook(hook_name: str) -> int:
    """The 0-based block whose output `hook_name` reads; SAEError for non-residual hooks."""
    for pattern in _RESID_POST:
        match = pattern.match(hook_name)
        if match:
            return int(match.group(1))
    match = _RESID_PRE.match(hook_name)
    if match and int(match.group(1)) > 0:
        return int(match.group(1)) - 1
    raise SAEError(
        f"the SAE was trained on hook {hook_name!r}; saeembed reads the residual stream after a block "
        f"(e.g. blocks.L.hook_resid_post, layers.L). Pass an SAE trained on the residual stream")
