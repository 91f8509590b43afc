"""The torch side of `qmedsam bench` (kept out of the engine package, which never imports torch)."""

from __future__ import annotations

import numpy as np
import torch

from training.litemedsam import load_litemedsam
from training.reference import OfficialPipeline


def latency_row(threads: int, image: np.ndarray, boxes: np.ndarray, median_ms, repeats: int) -> dict:
    torch.set_num_threads(threads)
    model = load_litemedsam()
    with torch.inference_mode():
        tensor = torch.from_numpy(image)
        embedding = model.embed(tensor)
        one, many = torch.from_numpy(boxes[:1]), torch.from_numpy(boxes)
        return {"model": "torch-fp32 (reference)",
                "encoder_ms": median_ms(lambda: model.embed(tensor), repeats),
                "decoder_1_ms": median_ms(lambda: model.decode(embedding, one), repeats),
                "decoder_16_ms": median_ms(lambda: model.decode(embedding, many), max(3, repeats // 3))}


def official_pipeline(threads: int) -> OfficialPipeline:
    """The baseline's semantics and cost: every box re-encodes every slice it covers."""
    torch.set_num_threads(threads)
    return OfficialPipeline(share_embeddings=False)
