"""Where the local model runs (``finetune.device``): the choice, on any machine, and the CPU
path, which is the only one this machine (and CI) has: nothing here assumes CUDA exists."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from backends.local.device import pick_device, pick_dtype
from config.settings import FinetuneSettings
from pgpt import app


@pytest.mark.parametrize(
    ("setting", "cuda", "mps", "device"),
    [
        ("auto", True, True, "cuda"),
        ("auto", True, False, "cuda"),
        ("auto", False, True, "mps"),
        ("auto", False, False, "cpu"),
        ("cpu", True, True, "cpu"),
        ("cuda", True, False, "cuda"),
        ("mps", False, True, "mps"),
    ],
)
def test_the_device_is_cuda_then_mps_then_the_cpu(setting, cuda, mps, device) -> None:
    assert pick_device(setting, cuda=cuda, mps=mps) == device


@pytest.mark.parametrize(("setting", "cuda", "mps"), [("cuda", False, True), ("mps", True, False)])
def test_a_device_asked_for_that_is_not_there_is_an_error(setting, cuda, mps) -> None:
    with pytest.raises(ValueError, match=f"torch sees no {setting.upper()} device"):
        pick_device(setting, cuda=cuda, mps=mps)


def test_bf16_only_on_a_cuda_gpu_that_has_it() -> None:
    assert pick_dtype("cuda", bf16=True) == "bfloat16"
    assert pick_dtype("cuda", bf16=False) == "float32"
    assert pick_dtype("mps", bf16=True) == pick_dtype("cpu", bf16=True) == "float32"


def test_this_machine_runs_on_the_cpu_in_float32() -> None:
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"  # a CPU build here and in CI
    assert FinetuneSettings().device == "auto"
    assert pick_device("auto") in (expected, "mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"set finetune\.device to auto or cpu"):
            pick_device("cuda")
    assert pick_dtype("cpu") == "float32"


def test_the_model_loads_where_it_is_asked_to(tiny_model) -> None:
    from backends.local.model import load_model

    model, _ = load_model(tiny_model, threads=1, device="cpu")
    assert str(model.device) == "cpu" and str(model.dtype) == "torch.float32"


def test_a_profile_asking_for_a_missing_gpu_is_one_line(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    profile = tmp_path / "gpu.yaml"
    profile.write_text("finetune:\n  device: cuda\n")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "export", "-p", str(profile)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, lines
    assert "finetune.device is cuda, but torch sees no CUDA device" in lines[0]
    profile.write_text("finetune:\n  device: gpu\n")
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "export", "-p", str(profile)])
    assert result.exit_code == 1 and "finetune.device" in result.stderr
