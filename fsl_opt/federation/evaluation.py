"""Evaluate a run's exported adapters through peft alone (``fsl-opt evaluate``).

The adapters a run wrote in peft's format (``RUN/adapter``) are loaded into a fresh base
model with ``PeftModel.from_pretrained``, the head beside them, and the whole model runs
every layer on the run's test split (or on other data with the same labels): the check
that what leaves fsl-opt is what it trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsl_opt.errors import ConfigError
from fsl_opt.federation.loop import ADAPTER_DIR
from fsl_opt.federation.runlog import CONFIG_FILE
from fsl_opt.federation.settings import load_config
from fsl_opt.federation.workload import columns, split_samples
from fsl_opt.learning.data import load_dataset, tokenize_cached
from fsl_opt.learning.export import load_adapter, predict
from fsl_opt.learning.split_model import load_tokenizer


def evaluate_run(run: Path, data: str | None = None, adapter: Path | None = None) -> dict[str, Any]:
    """Accuracy and loss of ``run``'s exported adapters on its test split (or ``data``).

    ``adapter`` defaults to ``run/adapter``. With ``data`` the whole test split of that
    dataset is used (its labels must be among the adapter's, matched by name): the run's
    ``test_samples`` and ``samples_per_device`` described the run's own data, not this one.
    """
    if not (run / CONFIG_FILE).is_file():
        raise ConfigError(f"{run}: no {CONFIG_FILE} (not a run folder)")
    cfg = load_config(run / CONFIG_FILE)
    if data is not None:
        cfg = cfg.replace(data=data, samples_per_device=None, test_samples=None)
    folder = adapter or run / ADAPTER_DIR
    model, head, info = load_adapter(folder)
    ds = load_dataset(cfg.data, columns(cfg))
    split = split_samples(cfg, ds)
    texts = [ds.test_texts[i] for i in split.test_idx]
    names = [ds.label_names[j] for j in ds.test_labels[split.test_idx]]
    known = {n: i for i, n in enumerate(info["labels"])}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(
            f"data {cfg.data!r} has labels {', '.join(map(repr, unknown[:5]))} the adapter in "
            f"{folder} was not trained on (it knows {', '.join(map(repr, info['labels'][:10]))})"
        )
    y = torch.as_tensor(np.array([known[n] for n in names]), dtype=torch.long)
    tok = tokenize_cached(texts, load_tokenizer(cfg.model), cfg.max_length)
    logits = predict(model, head, tok["input_ids"], tok["attention_mask"])
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    return {
        "accuracy": float((logits.argmax(-1) == y).float().mean()),
        "loss": loss,
        "samples": len(y),
        "data": cfg.data,
        "adapter": str(folder),
    }
