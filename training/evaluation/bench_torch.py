"""`qmedsam bench` with the official pipeline in torch beside the engine (the engine never imports torch).

    python -m training.evaluation.bench_torch --model litemedsam-fp32 --json docs/measurements/bench.json

Runs `qmedsam.bench` on the development cases of ../shared/data (or --data/--cases) and adds the torch
reference: its encoder/decoder latency, the official pipeline's wall time per case (no embedding sharing, as
the baseline) and the agreement (Dice) of its masks with the engine's. --skip-torch leaves torch out.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from qmedsam import bench
from qmedsam.errors import QMedSAMError

from training.datasets.cases import DEFAULT_DATA
from training.evaluation.reference import OfficialPipeline
from training.litemedsam import load_litemedsam

# A mix of 2D and 3D development cases: 1 to 125 boxes, a 2-lesion and a 9-organ MR volume.
DEV_CASES = ["2DBox_CT_sammed2d-amos000475", "2DBox_US_hc18-000", "2DBox_Dermoscopy_ham10000-ISIC0024311",
             "2DBox_XRay_covidseg-ARDSSevere", "2DBox_Microscope_dsb2018-stardist",
             "3DBox_MR_pyradiomics-brain1", "3DBox_MR_totalseg-examplemr"]


def _use_threads(threads: int | None) -> None:
    """None: torch's own default (all physical cores), as OpenVINO's choice is for the engine."""
    if threads:
        torch.set_num_threads(threads)


def latency_row(threads: int | None, image: np.ndarray, boxes: np.ndarray, median_ms, repeats: int) -> dict:
    _use_threads(threads)
    model = load_litemedsam()
    with torch.inference_mode():
        tensor = torch.from_numpy(image)
        embedding = model.embed(tensor)
        one, many = torch.from_numpy(boxes[:1]), torch.from_numpy(boxes)
        return {"model": "torch-fp32 (reference)",
                "encoder_ms": median_ms(lambda: model.embed(tensor), repeats),
                "decoder_1_ms": median_ms(lambda: model.decode(embedding, one), repeats),
                "decoder_16_ms": median_ms(lambda: model.decode(embedding, many), max(3, repeats // 3))}


def official_pipeline(threads: int | None) -> OfficialPipeline:
    """The baseline's semantics and cost: every box re-encodes every slice it covers."""
    _use_threads(threads)
    return OfficialPipeline(share_embeddings=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    parser.set_defaults(data=str(DEFAULT_DATA), cases=DEV_CASES)
    parser.add_argument("--skip-torch", action="store_true", help="engine rows only (as `qmedsam bench`)")
    args = parser.parse_args(argv)
    try:
        return bench.run(args, reference=None if args.skip_torch else sys.modules[__name__])
    except QMedSAMError as error:
        print(f"bench_torch: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
