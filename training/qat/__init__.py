"""QMedSAM's three-stage quantization-aware training: configuration, training loop, checkpoints, export."""
