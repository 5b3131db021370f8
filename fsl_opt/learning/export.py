"""Trained adapters out in peft's own format, and back in through peft.

:func:`save_adapter` writes a folder that the Hugging Face stack loads without fsl-opt::

    adapter/
      adapter_config.json          peft's LoRA config (rank, alpha, targets, layers)
      adapter_model.safetensors    the LoRA weights, peft's key names
      head.safetensors             the classification head: weight (labels x hidden), bias
      head.json                    label names, pooling, the base model
      README.md                    how to load both

The global state of a run can hold more than a LoRA pair per adapted matrix (the ``stack``
aggregator's changes merged into the frozen weights): :func:`plain_lora` turns any global
state into one LoRA adapter computing the same update, exactly (a merged change is factored
by its SVD at its numerical rank).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fsl_opt.learning.lora import (
    MERGED_PREFIX,
    lora_pairs,
    merged_key,
    pad,
    shrink,
    state_rank,
)
from fsl_opt.learning.split_model import HEAD_PREFIX, SplitModel

HEAD_FILE, HEAD_INFO, BASE_DIR = "head.safetensors", "head.json", "base"


def _save_base(model: SplitModel, folder: Path) -> None:
    """The frozen encoder as a transformers folder (config + weights, no LoRA)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model.encoder.config.save_pretrained(str(folder))
    weights = {
        k.replace(".base_layer.", "."): v.detach().contiguous()
        for k, v in model.encoder.state_dict().items()
        if "lora_" not in k
    }
    save_file(weights, str(folder / "model.safetensors"))


LOADING = """# Fine-tuned LoRA adapters from fsl-opt

Base model: `{base}`. LoRA rank {rank} on {targets} of layers {layers}; a linear head on the
mean-pooled last hidden states ({labels} labels: {names}).

```python
import json, torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
from peft import PeftModel

folder = "{folder}"
base = AutoModel.from_pretrained("{base}", add_pooling_layer=False)
model = PeftModel.from_pretrained(base, folder).eval()
head = load_file(folder + "/head.safetensors")          # weight, bias
labels = json.load(open(folder + "/head.json"))["labels"]
tok = AutoTokenizer.from_pretrained("{base}")

enc = tok(["some text"], truncation=True, max_length={max_length}, padding=True,
          return_tensors="pt")
with torch.no_grad():
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    logits = pooled @ head["weight"].T + head["bias"]
print(labels[int(logits.argmax(-1))])
```

`fsl-opt evaluate RUN_FOLDER` does this on the run's test split (or `--data`).
"""


def plain_lora(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A payload without ``merged.*`` entries computing the same update.

    Each adapted matrix's update is s B A + (merged change); a merged change C is factored
    exactly as C / s = U S V^T at its numerical rank, and stacked with the adapter:
    B' = [B, U S^(1/2)], A' = [A; S^(1/2) V^T]. Every matrix is then brought to one rank
    (the largest; zero-padded), as peft's config has one rank.
    """
    if not any(k.startswith(MERGED_PREFIX) for k in state):
        return dict(state)
    out = {k: v for k, v in state.items() if not k.startswith(MERGED_PREFIX)}
    for ka, kb in lora_pairs(state):
        change = state.get(merged_key(ka))
        if change is None:
            continue
        c = change.double() / scale
        s = torch.linalg.svdvals(c)
        rank = int((s > 1e-9 * max(float(s[0]), 1e-30)).sum()) if s.numel() else 0
        if rank == 0:
            continue
        # The change's factors: C / s = B_c A_c with A_c = I (k x k), B_c = C / s, truncated.
        a_c, b_c = shrink(torch.eye(c.shape[1], dtype=torch.float64), c, rank)
        out[ka] = torch.cat([state[ka].double(), a_c], 0).to(state[ka].dtype)
        out[kb] = torch.cat([state[kb].double(), b_c], 1).to(state[kb].dtype)
    top = max(int(out[ka].shape[0]) for ka, _ in lora_pairs(out))
    for ka, kb in lora_pairs(out):
        out[ka], out[kb] = pad(out[ka], out[kb], top)  # zero rows / columns change nothing
    return out


def save_adapter(
    model: SplitModel,
    state: dict[str, torch.Tensor],
    folder: Path,
    label_names: tuple[str, ...],
    base: str | None,
    max_length: int,
) -> Path:
    """Write ``state`` (a run's global state) as a peft adapter folder plus the head.

    ``model`` is the run's model; it is left at the exported rank with the exported
    adapters loaded (the frozen weights pre-trained). ``base`` is the id or folder the base
    model loads from; None (a random-weight model) saves the frozen encoder in
    ``folder/base``. Written to ``folder.tmp`` and renamed, so ``folder`` is whole or absent.
    """
    from safetensors.torch import save_file

    lora = plain_lora(state, model.lora_scale)
    model.set_rank(state_rank(lora))
    model.load_adapter_state(lora)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.peft.save_pretrained(str(tmp))
    if base is None:  # a model no id can rebuild (random weights): its frozen weights too
        _save_base(model, tmp / BASE_DIR)
        base = str(folder.resolve() / BASE_DIR)
    config_path = tmp / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(config, indent=2))
    head = {n: lora[f"{HEAD_PREFIX}1.{n}"].contiguous() for n in ("weight", "bias")}
    save_file(head, str(tmp / HEAD_FILE))
    info = {"labels": list(label_names), "pooling": "mean", "base": base, "max_length": max_length}
    (tmp / HEAD_INFO).write_text(json.dumps(info, indent=2))
    (tmp / "README.md").write_text(
        LOADING.format(
            base=base,
            rank=state_rank(lora),
            targets=", ".join(model.targets),
            layers=", ".join(map(str, model.layers)),
            labels=len(label_names),
            names=", ".join(label_names[:8]) + (", ..." if len(label_names) > 8 else ""),
            folder=str(folder),
            max_length=max_length,
        )
    )
    if folder.exists():
        import shutil

        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder


def load_adapter(folder: Path) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """(peft model on a fresh base, head tensors, head info) from a :func:`save_adapter`
    folder, through peft alone."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel

    from fsl_opt.errors import ConfigError, file_boundary

    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"{folder}: no adapter_config.json (not an exported adapter)")
    with file_boundary(folder / HEAD_INFO, "read the head's labels"):
        info = json.loads((folder / HEAD_INFO).read_text())
        if not isinstance(info, dict) or not {"base", "labels"} <= set(info):
            raise ConfigError(f"{folder / HEAD_INFO}: expected the keys base and labels")
    # A saved base inside the folder wins over the recorded path (the folder may have moved).
    where = folder / BASE_DIR if (folder / BASE_DIR).is_dir() else info["base"]
    try:
        base = AutoModel.from_pretrained(str(where), add_pooling_layer=False)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{folder}: the base model {where} does not load ({first})") from None
    with file_boundary(folder, "load the adapter through peft"):
        model = PeftModel.from_pretrained(base, str(folder)).eval()
    with file_boundary(folder / HEAD_FILE, "read the head"):
        head = load_file(str(folder / HEAD_FILE))
        if not {"weight", "bias"} <= set(head):
            raise ConfigError(f"{folder / HEAD_FILE}: expected the tensors weight and bias")
    return model, head, info


@torch.no_grad()
def predict(
    model: Any,
    head: dict[str, torch.Tensor],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    batch_size: int = 64,
) -> torch.Tensor:
    """Logits of the exported model: full forward, mean pooling, the linear head."""
    out = []
    for start in range(0, len(input_ids), batch_size):
        ids = input_ids[start : start + batch_size].long()
        mask = attention_mask[start : start + batch_size].long()
        width = int(mask.sum(1).max())
        h = model(input_ids=ids[:, :width], attention_mask=mask[:, :width]).last_hidden_state
        m = mask[:, :width].unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        out.append(pooled @ head["weight"].T + head["bias"])
    return torch.cat(out)


__all__ = ["load_adapter", "plain_lora", "predict", "save_adapter"]
