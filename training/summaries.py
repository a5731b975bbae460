"""TensorBoard hyperparameters (scalars are logged where they are computed; heatmaps in
:mod:`training.heatmaps`)."""

from __future__ import annotations

from torch.utils.tensorboard import SummaryWriter

from training.config import TrainConfig


def log_hparams(writer: SummaryWriter, config: TrainConfig, final: list[dict]) -> None:
    """The config (lists and dicts as strings) with the final error at each evaluated length."""
    hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
               for key, value in config.to_dict().items()}
    metrics = {f"hparam/cell_error_length_{r['length']}": r["cell_error"] for r in final}
    writer.add_hparams(hparams, metrics, run_name=".")
