"""`pgpt export-model`: a fine-tune as GGUF (llama.cpp, Ollama) or a transformers folder.

A retrain run of the sample with the tiny model exports its promoted model; the GGUF written
loads back in transformers (``gguf_file=``) with the merged model's logits and tokenizer; the
Modelfile's template renders the tokenizer's prompt; bad model ids are one line. The real
SmolLM2 is exported in ``tests/test_local_model.py``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from test_flows import latest_artifact
from typer.testing import CliRunner

from backends.local import LocalBackend
from backends.local.export_model import CHATML_TEMPLATE, MODELFILE
from config.runtime import results_in
from config.settings import load_settings
from core.runs import RunFolder
from flows.retrain import retrain
from pgpt import app

from conftest import SAMPLE
from tinymodel import SYSTEM_MESSAGE, write_tiny_profile

pytestmark = pytest.mark.usefixtures("prefect_server")
TEXTS = [
    "Tools\n\nUse small tools, all of them: hammers, saws — and “quotes”.",
    (SAMPLE / "posts").iterdir().__next__().read_text(encoding="utf-8")[:600],
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    """One retrain run of the sample with the tiny model that exports its promoted model."""
    data = tmp_path_factory.mktemp("data")
    profile = str(write_tiny_profile(data / "tiny.yaml", tiny_model))
    with results_in(data):
        result = retrain(None, profile, str(data), export_to=str(data / "exported"))
    return data, profile, result


def merged(data: Path, profile: str, model_id: str):
    """The fine-tune as ``pgpt format`` runs it: base + adapter, merged."""
    return LocalBackend(data, load_settings(profile).finetune).load(model_id)


def logits(model, tokenizer, text: str):
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0]


def load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = {"gguf_file": path.name, "local_files_only": True}
    model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **local)
    return model, AutoTokenizer.from_pretrained(path.parent, **local)


def test_retrain_exports_the_promoted_model_with_an_artifact(exported) -> None:
    data, _, result = exported
    model_id = result["finetune"]["model_id"]
    assert result["evaluate"]["decision"]["promote"]
    folder = data / "exported"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{model_id}.gguf", MODELFILE])
    files = [str(folder / f"{model_id}.gguf"), str(folder / MODELFILE)]
    assert sorted(result["exported_model"]["files"]) == sorted(files)
    artifact = latest_artifact("pgpt-model-export")
    assert model_id in artifact["data"] and "ollama create" in artifact["data"]


@pytest.mark.parametrize(("quant", "tolerance"), [("f16", 0.05), ("q8_0", 0.6)])
def test_the_gguf_loads_back_with_the_merged_models_logits(exported, tmp_path, quant, tolerance):
    """f16 rounds each weight to 11 bits; q8_0 to 8 bits a block of 32 (the tiny model's
    random weights are 10x larger than a trained model's, so its logits move more). A near
    tie between two tokens may go either way; a lead of more than twice the tolerance may not."""
    data, profile, result = exported
    model_id = result["finetune"]["model_id"]
    out = tmp_path / "out"
    args = ["--data-dir", str(data), "export-model", "--to", str(out), "--quant", quant]
    cli = CliRunner().invoke(app, [*args, "--profile", profile])
    assert cli.exit_code == 0, cli.output
    assert f"ollama create {model_id}" in " ".join(cli.output.split())
    model, tokenizer = merged(data, profile, model_id)
    back, back_tokenizer = load_gguf(out / f"{model_id}.gguf")
    for text in TEXTS:
        assert back_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert back_tokenizer.decode(tokenizer(text)["input_ids"]) == text
        ours, theirs = logits(model, tokenizer, text), logits(back, tokenizer, text)
        assert (ours - theirs).abs().max().item() < tolerance
        same = ours.argmax(-1) == theirs.argmax(-1)
        assert same.float().mean().item() >= (0.95 if quant == "f16" else 0.9)
        top = ours.topk(2, dim=-1).values  # where the lead is beyond rounding, no choice moves
        assert same[top[..., 0] - top[..., 1] > 2 * tolerance].all()
    chat = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": "Hi"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    again = back_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert again == prompt
    assert back_tokenizer.eos_token == "<|im_end|>"


def test_the_hf_folder_is_the_merged_model(exported, tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, profile, result = exported
    model_id = result["finetune"]["model_id"]
    args = ["--data-dir", str(data), "export-model", model_id, "--to", str(tmp_path / "hf")]
    cli = CliRunner().invoke(app, [*args, "--format", "hf", "--profile", profile])
    assert cli.exit_code == 0, cli.output
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("adapter*"))  # merged: no PEFT needed
    model, ours = merged(data, profile, model_id)
    for text in TEXTS:
        assert torch.equal(logits(model, tokenizer, text), logits(back, tokenizer, text))
    chat = [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": "Hi"}]
    prompt = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == prompt


def test_the_adapter_merges_without_peft_into_peft_s_weights(exported) -> None:
    """``backends.local.merge`` (what loading a fine-tune uses) gives PEFT's merged weights bit
    for bit, and they are not the base's."""
    import torch
    from peft import PeftModel

    from backends.local.model import load_model, quiet_peft

    data, profile, result = exported
    run = RunFolder.of(data, result["finetune"]["model_id"])
    base_dir = run.read_job().base_dir
    model = merged(data, profile, run.path.name)[0]
    assert model.fine_tuned  # its batches copy ahead (generate)
    ours = model.state_dict()
    with quiet_peft():
        peft = PeftModel.from_pretrained(load_model(base_dir, threads=1)[0], run.adapter)
        theirs = peft.merge_and_unload().state_dict()
    base = load_model(base_dir, threads=1)[0].state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sum(not torch.equal(ours[k], base[k]) for k in ours) == 7 * 2  # 7 kinds x 2 layers


def go_template(template: str, **values: str) -> str:
    """``template`` rendered as Go's text/template renders Ollama's variables: ``{{ .X }}`` and
    ``{{ if .X }}...{{ end }}`` (no nesting); a prompt ends where ``.Response`` begins."""
    template = template.split("{{ .Response }}")[0]

    def block(found: re.Match) -> str:
        return found[2] if values.get(found[1]) else ""

    template = re.sub(r"\{\{ if \.(\w+) \}\}(.*?)\{\{ end \}\}", block, template, flags=re.S)
    return re.sub(r"\{\{ \.(\w+) \}\}", lambda found: values[found[1]], template)


def test_the_modelfile_renders_the_tokenizers_prompt(exported) -> None:
    data, profile, result = exported
    model_id = result["finetune"]["model_id"]
    text = (data / "exported" / MODELFILE).read_text()
    assert f"FROM ./{model_id}.gguf" in text and "PARAMETER temperature 0" in text
    [template] = re.findall(r'TEMPLATE """(.*?)"""', text, flags=re.S)
    [system] = re.findall(r'SYSTEM """(.*?)"""', text, flags=re.S)
    assert template == CHATML_TEMPLATE and system == SYSTEM_MESSAGE
    _, tokenizer = merged(data, profile, model_id)
    for user in TEXTS:
        chat = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        want = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert go_template(template, System=system, Prompt=user) == want


def test_scaffold_only_prints_what_the_model_reads(exported) -> None:
    from core.author_rules import AuthorRules

    data, profile, result = exported
    model_id = result["finetune"]["model_id"]
    plain = "Tools\n\nUse small tools, all of them:\n\nhammers\nsaws"
    args = ["--data-dir", str(data), "format", "-", "--scaffold-only", "--profile", profile]
    cli = CliRunner().invoke(app, args, input=plain)
    assert cli.exit_code == 0, cli.output
    adapter = RunFolder.of(data, model_id).adapter
    scaffold = json.loads((adapter / "decoding.json").read_text())["scaffold"]
    want = AuthorRules.load(adapter)(plain) if scaffold == "author" else plain
    assert cli.stdout.strip() == want.strip()


def test_pgpt_format_answers_as_transformers_would_without_importing_it(exported) -> None:
    """`pgpt format` loads the light model (backends/local/llama.py): in a fresh process it
    never imports transformers, and it prints what the transformers-loaded model does
    (``PGPT_LIGHT=0``)."""
    import os
    import subprocess
    import sys

    data, profile, _ = exported
    args = ["--data-dir", str(data), "format", "-", "--profile", profile]
    probe = (
        "import sys; from pgpt import app\n"
        "try: app(sys.argv[1:])\n"
        "except SystemExit: pass\n"
        "print('transformers' in sys.modules, file=sys.stderr)"
    )
    printed = {}
    for light in ("1", "0"):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args], input=TEXTS[1], capture_output=True,
            text=True, env={**os.environ, "PGPT_LIGHT": light}, check=True,
        )  # fmt: skip
        printed[light] = done.stdout
        assert done.stderr.strip().splitlines()[-1] == str(light == "0")
    assert printed["1"].strip() and printed["1"] == printed["0"]


@pytest.mark.parametrize(
    ("model", "said"),
    [
        ("nope-1", "no model 'nope-1' in "),
        ("ft:gpt-4o-mini-2024-07-18:acme::x1", "is an OpenAI fine-tune"),
        ("damaged", "is unfinished or damaged"),
        ("moved-base", "its base model folder {tmp}/gone is not there; put it back"),
    ],
)
def test_a_model_that_cannot_be_exported_is_one_line(exported, tmp_path, model, said) -> None:
    data, profile, result = exported
    source = RunFolder.of(data, result["finetune"]["model_id"]).path
    if model == "damaged":  # a copy of the fine-tune without its adapter's config
        shutil.copytree(source, data / "models" / model)
        (data / "models" / model / "adapter" / "adapter_config.json").unlink()
    if model == "moved-base":  # a copy whose base model folder is gone
        shutil.copytree(source, data / "models" / model)
        job = json.loads((data / "models" / model / "job.json").read_text())
        job["base_dir"] = job["settings"]["base_model"] = str(tmp_path / "gone")
        (data / "models" / model / "job.json").write_text(json.dumps(job))
    said = said.format(tmp=tmp_path)
    args = ["--data-dir", str(data), "export-model", model, "--to", str(tmp_path / "out")]
    cli = CliRunner().invoke(app, [*args, "--profile", profile])
    assert cli.exit_code == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgpt export-model: ") and said in lines[0]
    assert not (tmp_path / "out").exists()
    if model in ("nope-1", "moved-base"):  # formatting with it says the same
        (tmp_path / "in.txt").write_text("Some text")
        args = ["--data-dir", str(data), "format", str(tmp_path / "in.txt"), "--model", model]
        cli = CliRunner().invoke(app, [*args, "--profile", profile])
        lines = cli.stderr.strip().splitlines()
        assert cli.exit_code == 1 and len(lines) == 1 and lines[0].startswith("pgpt format: ")
        assert said in lines[0]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "current.json): run `pgpt finetune` or give a model id"),
        (["--to", "{tmp}/file"], "--to {tmp}/file is a file: give a folder"),
        (["--quant", "q4"], "--quant q4: one of f16, q8_0"),
        (["--format", "onnx"], "--format onnx: one of gguf, hf"),
    ],
)
def test_no_model_yet_or_a_wrong_option_is_one_line(tmp_path, args, said) -> None:
    (tmp_path / "file").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    cli = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "export-model", *args])
    lines = cli.stderr.strip().splitlines()
    assert cli.exit_code == 1 and len(lines) == 1 and said.format(tmp=tmp_path) in lines[0], lines
