"""OpenVINO side of the engine: compile the verified encoder/decoder IRs and run them.

LATENCY hint (THROUGHPUT doubles single-request latency on 2 cores), an explicit thread count, and
OpenVINO's compiled-model cache in a per-user folder so that the second start compiles much faster.

OpenVINO (2026.4) names a cache blob without the inference precision or the instruction set it was compiled
for: an f32 and a bf16 compile of one model, or a compile under another ONEDNN_MAX_CPU_ISA, share one file
name, and a mismatch makes OpenVINO rewrite that file in place, non-atomically, while another process (or a
compiled model of this one) may have it memory-mapped: the bf16 crashes of issue 13. So every combination
gets its own cache folder (`compile_cache_folder`), and blobs are read into memory, not mapped.

Float arithmetic is f32 unless asked otherwise: OpenVINO's own default on CPUs with bf16 instructions
(AVX512-BF16, AMX) is bf16, which is about 2x faster there but changes the embedding by ~4 % (measured,
README), so the same model would give different masks on different laptops. bf16 is an explicit opt-in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openvino as ov

from .catalogue import ClickDecoderEntry, ModelEntry
from .errors import QMedSAMError


def default_cache_dir() -> Path:
    """$QMEDSAM_CACHE_DIR, else the platform's per-user cache folder."""
    if os.environ.get("QMEDSAM_CACHE_DIR"):
        return Path(os.environ["QMEDSAM_CACHE_DIR"])
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "qmedsam"


INFERENCE_PRECISIONS = ("f32", "bf16")


def compile_cache_folder(cache: Path, inference_precision: str) -> Path:
    """The OpenVINO cache folder for one OpenVINO version, float precision and instruction-set cap.

    These change the compiled graph but not OpenVINO's blob name, so they name the folder instead.
    """
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    version = ov.get_version().split("-")[0]
    return cache / "openvino" / f"{version}-{inference_precision}-{isa}".lower()


def supports_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (OpenVINO would then pick bf16 by default)."""
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class CompiledPair:
    """The compiled encoder and decoder of one catalogue model."""

    def __init__(self, entry: ModelEntry, threads: int | None = None, cache_dir: Path | None = None,
                 inference_precision: str = "f32"):
        if threads is not None and threads < 1:
            raise QMedSAMError(f"--threads must be at least 1, got {threads}.")
        if inference_precision not in INFERENCE_PRECISIONS:
            raise QMedSAMError(f"Inference precision must be one of {', '.join(INFERENCE_PRECISIONS)}, "
                               f"got {inference_precision!r}.")
        if inference_precision == "bf16" and not supports_bf16():
            raise QMedSAMError("This CPU has no bf16 instructions (AVX512-BF16 or AMX); use f32.")
        self.inference_precision = inference_precision
        self.entry = entry
        self.core = ov.Core()
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        try:
            folder = compile_cache_folder(cache, inference_precision)
            folder.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(folder), "ENABLE_MMAP": False})
        except OSError:
            pass  # the cache only speeds up start-up; run without it
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": inference_precision}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.encoder = self.compile(self.entry, "encoder")
        self.decoder = self.compile(self.entry, "decoder")
        self._encoder_request = self.encoder.create_infer_request()
        self._decoder_request = self.decoder.create_infer_request()

    def compile(self, entry, part: str) -> ov.CompiledModel:
        """Compile the verified `part` ('encoder', 'decoder') of a catalogue entry with this pair's settings."""
        xml, weights = entry.model_pair(part)
        try:
            model = self.core.read_model(model=xml, weights=weights)
            return self.core.compile_model(model, "CPU", self.config)
        except RuntimeError as error:
            raise QMedSAMError(f"OpenVINO could not load the {part} of model '{entry.name}': "
                               f"{str(error).splitlines()[0]}. Update openvino or re-export the model.") from None

    def encode(self, model_input: np.ndarray) -> np.ndarray:
        """(1, 3, 256, 256) float32 -> (1, 256, 64, 64) image embedding."""
        result = self._encoder_request.infer({0: model_input})
        return np.array(result[0], copy=True)  # the request reuses its output buffer

    def start_encode(self, model_input: np.ndarray) -> ov.InferRequest:
        """Asynchronous encode on a fresh request (for background prefetch); call .wait(), then read output."""
        request = self.encoder.create_infer_request()
        request.start_async({0: model_input})
        return request

    def decode(self, embedding: np.ndarray, boxes_256: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embedding (1, 256, 64, 64) and (N, 4) boxes in 256 space -> logits (N, 256, 256), iou (N,)."""
        boxes = np.ascontiguousarray(boxes_256, np.float32)
        return _logits_and_iou(self._decoder_request.infer({0: embedding, 1: boxes}))


class CompiledClickDecoder:
    """The click decoder (boxes + points), compiled with the settings of the model pair whose embeddings it reads."""

    def __init__(self, pair: CompiledPair, entry: ClickDecoderEntry):
        self.entry = entry
        self.decoder = pair.compile(entry, "decoder")
        self._request = self.decoder.create_infer_request()

    def decode(self, embedding: np.ndarray, boxes_256: np.ndarray, points_256: np.ndarray,
               point_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embedding, (N, 4) boxes, (N, P, 2) points and (N, P) labels 1 / 0 / -1 (256 space) -> logits
        (N, 4, 256, 256) and iou (N, 4) of all four mask tokens, token 0 first (for qmedsam.click_rule)."""
        return _logits_and_iou(self._request.infer({0: embedding, 1: np.ascontiguousarray(boxes_256, np.float32),
                                                    2: np.ascontiguousarray(points_256, np.float32),
                                                    3: np.ascontiguousarray(point_labels, np.float32)}),
                               tokens=slice(None))


def _logits_and_iou(result, tokens: int | slice = 0) -> tuple[np.ndarray, np.ndarray]:
    """A decoder's outputs (N, T, 256, 256) and (N, T), of the mask tokens `tokens` (0: the box decoder's one
    token, the axis dropped), as owned arrays: the request reuses its buffers."""
    return np.array(result[0][:, tokens], copy=True), np.array(result[1][:, tokens], copy=True)
