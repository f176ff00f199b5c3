"""distrec: distributed training of recommender models on Ray Train with TorchRec sharded tables."""

__version__ = "0.1.0"
