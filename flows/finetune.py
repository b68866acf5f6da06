"""Fine-tune flow: DATA/jsonl/{train,valid}.jsonl -> a fine-tuned model.

python flows/finetune.py
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from backends.local.train import file_sha256
from config.settings import load_settings
from tasks.finetune import finetune_model, publish_training, set_current_model


@flow(name="finetune")
def finetune(
    profile: str = "default", data_dir: str | None = None, make_current: bool = True
) -> dict:
    """Fine-tune the configured backend on the exported JSONL (and make it the current model).

    The retrain flow passes ``make_current=False``: there, evaluation decides (champion/challenger).
    """
    settings = load_settings(profile, data_dir)
    jsonl = Path(settings.data_dir) / "jsonl"
    train, valid = jsonl / "train.jsonl", jsonl / "valid.jsonl"
    if not train.exists():
        raise FileNotFoundError(f"{train} not found: run `pgpt export` first")
    valid_or_none = str(valid) if valid.exists() and valid.stat().st_size else None
    job = finetune_model(
        str(train),
        valid_or_none,
        file_sha256(train, valid_or_none),
        settings.finetune.model_dump(),
        str(settings.data_dir),
    )
    loss_png = publish_training(job, str(settings.data_dir))
    if make_current:
        set_current_model(settings.data_dir, job["model_id"])
    return {**job, "loss_png": loss_png}


if __name__ == "__main__":
    from config.runtime import results_in

    with results_in(load_settings().data_dir):
        finetune()
