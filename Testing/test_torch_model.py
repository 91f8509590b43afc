"""The PyTorch LiteMedSAM: structure, strict loading, checksum guard, batched decoding semantics."""

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
F = torch.nn.functional

from training.litemedsam import LiteMedSAM, load_litemedsam  # noqa: E402
from training.litemedsam.weights import find_checkpoint  # noqa: E402

CASE = "2DBox_CT_sammed2d-amos000475.npz"  # 512x512 CT slice with 3 organs


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return load_litemedsam()


def _preprocess(image):
    """The official LiteMedSAM input: longest side 256 (INTER_AREA), min-max to [0, 1], pad bottom/right."""
    h, w = image.shape[:2]
    scale = 256 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small - small.min()) / max(float(small.max() - small.min()), 1e-8)
    padded = np.zeros((256, 256, 3), np.float32)
    padded[:nh, :nw] = small
    return torch.from_numpy(padded).permute(2, 0, 1)[None], (nh, nw), scale


@pytest.fixture(scope="module")
def case(model, shared_data):
    image = np.load(shared_data / "imgs" / CASE)
    gts = np.load(shared_data / "gts" / CASE)["gts"]
    tensor, resized, scale = _preprocess(image["imgs"])
    boxes = torch.from_numpy((image["boxes"] * scale).astype(np.int64)).float()
    with torch.inference_mode():
        embedding = model.embed(tensor)
    return embedding, boxes, gts, resized


def test_parameter_counts():
    net = LiteMedSAM()
    counts = {name: sum(p.numel() for p in getattr(net, name).parameters())
              for name in ("image_encoder", "prompt_encoder", "mask_decoder")}
    assert counts == {"image_encoder": 5_726_740, "prompt_encoder": 6_220, "mask_decoder": 4_058_340}


def test_strict_load_covers_every_checkpoint_key(model):
    state = torch.load(find_checkpoint(), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert len([k for k in state if k.startswith("prompt_encoder.")]) == 17
    assert not model.training


def test_wrong_checksum_is_refused_before_unpickling(tmp_path, monkeypatch):
    tampered = tmp_path / "lite_medsam.pth"
    shutil.copyfile(find_checkpoint(), tampered)
    with open(tampered, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a file with a wrong checksum")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ValueError, match="sha256"):
        load_litemedsam(tampered)


def test_output_shapes(model, case):
    embedding, boxes, _, _ = case
    assert embedding.shape == (1, 256, 64, 64)
    with torch.inference_mode():
        logits, iou = model.decode(embedding, boxes)
    assert logits.shape == (len(boxes), 1, 256, 256)
    assert iou.shape == (len(boxes), 1)


def test_batched_decode_equals_one_box_at_a_time(model, case):
    embedding, boxes, _, _ = case
    assert len(boxes) >= 3
    with torch.inference_mode():
        logits, iou = model.decode(embedding, boxes)
        for i in range(len(boxes)):
            one_logits, one_iou = model.decode(embedding, boxes[i:i + 1])
            torch.testing.assert_close(logits[i:i + 1], one_logits, atol=1e-4, rtol=0)
            torch.testing.assert_close(iou[i:i + 1], one_iou, atol=1e-4, rtol=0)


def test_broadcast_equals_embedding_repeated_per_box(model, case):
    # SAM's reference semantics repeat the image embedding once per box before the transformer.
    embedding, boxes, _, _ = case
    repeated = embedding.repeat_interleave(len(boxes), dim=0)
    with torch.inference_mode():
        logits, iou = model.decode(embedding, boxes)
        ref_logits, ref_iou = model.decode(repeated, boxes)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(iou, ref_iou, atol=1e-4, rtol=0)


def test_segments_real_organs(model, case):
    # Guards against weight-layout mistakes that shapes alone cannot catch.
    embedding, boxes, gts, (nh, nw) = case
    with torch.inference_mode():
        logits, _ = model.decode(embedding, boxes)
    logits = F.interpolate(logits[:, :, :nh, :nw], size=gts.shape, mode="bilinear", align_corners=False)
    masks = logits[:, 0].numpy() > 0
    dice = [2 * (masks[i] & (gts == i + 1)).sum() / (masks[i].sum() + (gts == i + 1).sum())
            for i in range(len(boxes))]
    assert np.mean(dice) > 0.8, dice


def test_folded_decoder_projections_are_exact():
    """The export's re-associated decoder (fold_for_inference) gives the plain decoder's logits."""
    model = load_litemedsam()
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[10.0, 20, 120, 140], [30, 40, 200, 220], [0, 0, 255, 255]])
    with torch.inference_mode():
        plain_logits, plain_iou = model.decode(embedding, boxes)
        model.mask_decoder.fold_for_inference(True)
        try:
            folded_logits, folded_iou = model.decode(embedding, boxes)
        finally:
            model.mask_decoder.fold_for_inference(False)
    torch.testing.assert_close(folded_logits, plain_logits, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(folded_iou, plain_iou, atol=1e-5, rtol=1e-5)


def test_upscaling_as_1x1_is_exact():
    """The 1x1-convolution forms of the upscaling steps (where a quantization recipe may place its quantizers)
    give the plain decoder's logits, with the last folded into the per-box product or not."""
    model = load_litemedsam()
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[10.0, 20, 120, 140], [0, 0, 255, 255]])
    with torch.inference_mode():
        plain_logits, _ = model.decode(embedding, boxes)
        model.mask_decoder.upscaling_as_1x1()
        folded_logits, _ = model.decode(embedding, boxes)
        model.mask_decoder.fold_last_upscaling = False
        shuffled_logits, _ = model.decode(embedding, boxes)
    torch.testing.assert_close(folded_logits, plain_logits, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(shuffled_logits, plain_logits, atol=2e-4, rtol=1e-4)
