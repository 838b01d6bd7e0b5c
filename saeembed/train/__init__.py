"""Training SAEs on a reader's activations: windows of activations, cached and shuffled
(`activations`), the TopK SAE and its trainer (`topk`), and the run with checkpoints (`train`)."""

from saeembed.train.train import TrainConfig, TrainResult, train_sae

__all__ = ["TrainConfig", "TrainResult", "train_sae"]
