"""On a CUDA GPU: the same training as on the CPU, bf16 where the GPU has it, a run that
resumes. Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def _tiny(seed=0):
    """The tiny encoder, rank 4 on its last 2 layers, one device's 24 random samples."""
    from fsl_opt.learning.local import cache_hidden
    from fsl_opt.learning.split_model import SplitModel, layer_indices, load_encoder

    torch.manual_seed(seed)
    encoder = load_encoder("tiny")
    layers = layer_indices("last2", encoder.config.num_hidden_layers)
    model = SplitModel(encoder, layers=layers, num_labels=3)
    model.reset_adapters(seed)
    torch.manual_seed(seed)
    model.set_rank(4)
    model.head[0].p = 0.0  # the head's dropout draws from each device's own RNG stream
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (24, 16), generator=g)
    mask = torch.ones(24, 16, dtype=torch.int8)
    mask[:, 12:] = 0
    labels = torch.randint(0, 3, (24,), generator=g)
    data = cache_hidden(model, ids, mask, labels, cache=True)
    return model, data


def test_training_on_cuda_matches_the_cpu():
    """fp32, no dropout (frozen layers' and head's): one device's local training gives
    the same adapters (to float tolerance) on the GPU as on the CPU, and the same
    evaluation."""
    from fsl_opt.learning.local import LocalConfig, evaluate, train

    config = LocalConfig(rank=4, lr=5e-3, batch_size=8, seed=3, frozen_dropout=False)
    results = {}
    for device in (CPU, CUDA):
        model, data = _tiny()
        start = {k: v.clone() for k, v in model.adapter_state().items()}
        out = train(model, start, data, config, device=device)
        model.load_adapter_state(out.adapter_state)
        results[device.type] = (out, evaluate(model, data, device=device))
    (cpu, cpu_eval), (gpu, gpu_eval) = results["cpu"], results["cuda"]
    assert set(gpu.adapter_state) == set(cpu.adapter_state)
    for k, v in cpu.adapter_state.items():
        assert gpu.adapter_state[k].device.type == "cpu"  # payloads come back on the CPU
        torch.testing.assert_close(gpu.adapter_state[k], v, rtol=1e-3, atol=1e-4)
    assert gpu_eval["accuracy"] == pytest.approx(cpu_eval["accuracy"], abs=1 / 24)
    assert gpu_eval["loss"] == pytest.approx(cpu_eval["loss"], rel=1e-3)


@pytest.mark.parametrize("grouped", [False, True], ids=["alone", "grouped"])
def test_training_with_dropout_on_cuda_matches_the_cpu(grouped):
    """fp32 with every dropout on (the frozen layers' and the head's): the masks come from
    the keyed stream on the CPU, so one device trained on the GPU, alone or in a group of
    two, ends with the adapters it gets on the CPU alone."""
    from fsl_opt.learning.batched import train_batched
    from fsl_opt.learning.local import LocalConfig, train

    configs = [LocalConfig(rank=4, lr=5e-3, batch_size=8, seed=s, stream=(9, 1, s)) for s in (3, 4)]
    model, data = _tiny()
    model.head[0].p = 0.1
    start = {k: v.clone() for k, v in model.adapter_state().items()}
    cpu = train(model, start, data, configs[0], device=CPU)
    if grouped:
        gpu = train_batched(model, [start, start], [data, data], configs, [None, None], CUDA)[0]
    else:
        gpu = train(model, start, data, configs[0], device=CUDA)
    off = train(model, start, data, LocalConfig(rank=4, lr=5e-3, batch_size=8, seed=3))
    for k, v in cpu.adapter_state.items():
        torch.testing.assert_close(gpu.adapter_state[k], v, rtol=1e-3, atol=1e-4)
    assert any(
        not torch.allclose(off.adapter_state[k], v) for k, v in cpu.adapter_state.items()
    )  # another stream key gives other masks: the test can fail


def test_bf16_on_cuda_is_supported_and_close_to_fp32():
    """Ampere or newer: bf16 is accepted, and a bf16 evaluation of the same adapters is
    within bf16's rounding of the fp32 one."""
    from fsl_opt.learning.local import bf16_support, check_precision, evaluate

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 needs compute capability 8.0")
    assert bf16_support(CUDA) == ""
    check_precision("bf16", CUDA)
    model, data = _tiny()
    model.to(CUDA)
    fp32 = evaluate(model, data, device=CUDA)
    bf16 = evaluate(model, data, device=CUDA, precision="bf16")
    assert bf16["loss"] == pytest.approx(fp32["loss"], rel=2e-2)


def test_run_on_cuda_in_bf16_resumes_to_the_same_records(tmp_path):
    """A whole federated run on the GPU in bf16 (tiny model, 3 rounds), stopped after round
    1 and resumed, logs the records of the run done in one go."""
    from fsl_opt.federation.loop import run
    from fsl_opt.federation.settings import RunConfig

    from .conftest import TINY_RUN

    def cfg(name):
        return RunConfig(
            **TINY_RUN, torch_device="cuda", precision="bf16", out=str(tmp_path / name)
        )

    whole = run(cfg("whole"), progress=False)
    run(cfg("parts"), progress=False, stop_after=1)
    parts = run(cfg("parts"), resume=True, progress=False)
    assert len(whole) == len(parts) == TINY_RUN["rounds"] + 1
    for a, b in zip(whole, parts, strict=True):
        assert a.get("ranks") == b.get("ranks")
        assert a["test_accuracy"] == b["test_accuracy"]
    assert whole[-1]["test_accuracy"] > 0


def test_devices_trained_together_on_cuda_match_the_cpu():
    """The batched multi-device path on the GPU gives the CPU's adapters."""
    from fsl_opt.learning.batched import train_batched
    from fsl_opt.learning.local import LocalConfig

    configs = [
        LocalConfig(rank=4, lr=5e-3, batch_size=8, seed=s, frozen_dropout=False) for s in (1, 2)
    ]
    results = {}
    for device in (CPU, CUDA):
        model, data = _tiny()
        state = {k: v.clone() for k, v in model.adapter_state().items()}
        results[device.type] = train_batched(
            model, [state, state], [data, data], configs, [None, None], device=device
        )
    for cpu, gpu in zip(results["cpu"], results["cuda"], strict=True):
        for k, v in cpu.adapter_state.items():
            torch.testing.assert_close(gpu.adapter_state[k], v, rtol=1e-3, atol=1e-4)
