"""Quantization-aware training: schedule, losses, checkpoints, and real stage runs under torchrun (gloo)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from qmedsam.catalogue import find_model
from qmedsam.engine import Segmenter
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import load_npz_case

from training.litemedsam.losses import dice_loss, distillation_loss, distillation_term, mask_iou, stage_losses
from training.provenance import REPO_ROOT
from training.qat.checkpoint import load_checkpoint, model_from_checkpoint, quantized_litemedsam, save_checkpoint
from training.qat.config import StageConfig, learning_rate, load_stage_config
from training.quantization.ptq import load_recipe
from training.quantization.quantize import calibrate

CONFIGS = REPO_ROOT / "training" / "configs"
SMOKE_CASES = "[2DBox_US_hc18-000,2DBox_XRay_covidseg-ARDSSevere]"
SMOKE = ["--set", f"cases={SMOKE_CASES}", "--set", "warmup_epochs=1", "--set", "cosine_epochs=1",
         "--set", "val_samples=2", "--set", "calibration_samples=1", "--set", "calibration_per_modality=null",
         "--set", "batch_size=1", "--set", "samples_per_modality=1"]


def test_schedule_is_the_papers_warmup_then_cosine():
    config = load_stage_config(CONFIGS / "qat-stage1.yaml", ["lr=0.01", "warmup_epochs=5", "cosine_epochs=10"])
    rates = [learning_rate(config, epoch) for epoch in range(config.epochs)]
    assert config.epochs == 14  # Table 3: 5 warm-up + 10 cosine epochs, sharing the peak epoch
    assert rates[0] == pytest.approx(1e-4)  # 1 % of lr 0.01
    assert rates[4] == pytest.approx(0.01)
    assert rates[-1] == pytest.approx(1e-5)  # 0.1 % of lr
    assert all(a < b for a, b in zip(rates[:4], rates[1:5]))
    assert all(a > b for a, b in zip(rates[4:-1], rates[5:]))


def test_stage_configs_chain_and_reject_unknown_fields(tmp_path):
    stages = [load_stage_config(CONFIGS / f"qat-stage{n}.yaml") for n in (1, 2, 3)]
    assert [s.trainable_parts for s in stages] == [("image_encoder",), ("mask_decoder",),
                                                   ("image_encoder", "mask_decoder")]
    assert stages[1].init_checkpoint == stages[0].output_dir + "/best.pt"
    assert stages[2].init_checkpoint == stages[1].output_dir + "/best.pt"
    assert stages[0].loss_weight("distill") > 0 and stages[1].loss_weight("distill") == 0
    overridden = load_stage_config(CONFIGS / "qat-stage1.yaml", ["batch_size=4", "cases=[a, b]"])
    assert overridden.batch_size == 4 and overridden.cases == ("a", "b")
    with pytest.raises(ValueError, match="bach_size"):
        load_stage_config(CONFIGS / "qat-stage1.yaml", ["bach_size=4"])
    with pytest.raises(ValueError, match="loss term"):
        StageConfig(stage=1, recipe="r", quantized_parts=["image_encoder"], trainable_parts=["image_encoder"],
                    output_dir="o", loss={"dise": 1.0})


def test_losses_reward_the_right_mask_and_weigh_distillation_by_teacher_iou():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    right, wrong = (target * 2 - 1) * 20, (0.5 - target) * 20
    assert dice_loss(right, target) < 0.01 < 0.9 < dice_loss(wrong, target)
    assert mask_iou(right, target).tolist() == [1.0, 1.0]
    assert mask_iou(wrong, target).tolist() == [0.0, 0.0]
    terms = stage_losses(wrong, torch.ones(2, 1), target, {"dice": 1, "bce": 1, "focal": 0, "iou": 1})
    assert set(terms) == {"dice", "bce", "iou"} and terms["iou"] == pytest.approx(1.0)
    student, teacher = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
    assert distillation_loss(student, teacher, torch.tensor([[1.0], [1.0]])) == pytest.approx(1.0)
    assert distillation_loss(student, teacher, torch.tensor([[0.5], [0.0]])) == pytest.approx(0.25)
    assert distillation_loss(teacher, teacher, torch.ones(2, 1)) == 0


def test_paper_distillation_is_weighted_by_the_teachers_true_iou_not_its_prediction():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    # The teacher segments sample 0 exactly and misses sample 1, while predicting the opposite IoUs.
    teacher_logits = torch.stack([(target[0] * 2 - 1) * 20, -20 * torch.ones(1, 8, 8)])
    predicted_iou = torch.tensor([[0.0], [1.0]])
    student, teacher = torch.zeros(2, 4, 3, 3), torch.ones(2, 4, 3, 3)
    student[1] = 3.0  # sample 1's error (MSE 4) is the one the true IoU must silence
    true = distillation_term(student, teacher, teacher_logits, predicted_iou, target, "true_iou")
    assert true == pytest.approx(0.5 * (1.0 + 4.0) / 2)  # mean true IoU (1, 0) x the batch MSE
    ours = distillation_term(student, teacher, teacher_logits, predicted_iou, target, "predicted_iou")
    assert ours == pytest.approx(4.0 / 2)  # only sample 1, weighted 1 by its predicted IoU


def test_paper_configs_chain_and_differ_from_ours_only_where_the_paper_does():
    paper = [load_stage_config(CONFIGS / f"qat-paper-stage{n}.yaml") for n in (1, 2, 3)]
    ours = [load_stage_config(CONFIGS / f"qat-stage{n}.yaml") for n in (1, 2, 3)]
    assert paper[1].init_checkpoint == paper[0].output_dir + "/best.pt"
    assert paper[2].init_checkpoint == paper[1].output_dir + "/best.pt"
    recipe = load_recipe(REPO_ROOT / paper[0].recipe)
    assert not (recipe.weight_per_channel or recipe.fold_batchnorm or recipe.float_depthwise or recipe.keep_float)
    for config in paper:
        assert (config.lr, config.momentum, config.grad_clip, config.epochs) == (0.01, 0.9, None, 14)
        assert config.train_mode and config.distill_weight == "true_iou" and config.dice_form == "squared"
        assert config.split and config.loss_weight("iou") == 0 and config.loss_weight("bce") == 1
    assert [c.loss_weight("distill") for c in paper] == [1.0, 0.0, 1.0]
    for config in ours:  # our configuration keeps its behaviour
        assert not config.train_mode and config.distill_weight == "predicted_iou" and config.dice_form == "plain"
    with pytest.raises(ValueError, match="distill_weight"):
        load_stage_config(CONFIGS / "qat-paper-stage1.yaml", ["distill_weight=true"])


@pytest.mark.slow  # a real forward, backward and validation of LiteMedSAM: ~80 s each on a busy 2-core machine
@pytest.mark.parametrize("train_mode", [False, True])
def test_train_mode_switch_decides_whether_batchnorm_statistics_move(us_sample, train_mode):
    """The paper's train mode updates BatchNorm running statistics; ours leaves them; validation is eval."""
    from training.litemedsam import load_litemedsam
    from training.qat.train import StudentStep, _freeze, train_epoch, validate

    torch.set_num_threads(2)
    model = load_litemedsam().eval()
    step = StudentStep(model, ["image_encoder"])
    optimizer = torch.optim.SGD(_freeze(model, ["image_encoder"]), lr=0.0)  # lr 0: only BatchNorm can change
    norm = model.image_encoder.patch_embed.seq[0].bn
    before = norm.running_mean.clone()
    config = StageConfig(stage=1, recipe="r", quantized_parts=["image_encoder"], trainable_parts=["image_encoder"],
                         output_dir="o", train_mode=train_mode)
    image, box = us_sample
    sample = {"image": image, "box": box, "mask": (torch.rand(1, 1, 256, 256) > 0.5).float()}
    train_epoch(step, None, [sample], optimizer, config, False, 0)
    assert model.training == train_mode
    assert torch.equal(norm.running_mean, before) != train_mode
    validate(step, load_litemedsam().eval(), _OneSample(sample), [0], 0, 1)
    assert not model.training


class _OneSample:
    def __init__(self, sample):
        self.sample = {"image": sample["image"][0], "box": sample["box"][0], "mask": sample["mask"][0]}

    def __getitem__(self, index):
        return self.sample


def test_checkpoint_files_are_atomic_and_checked_on_load(tmp_path):
    payload = {"stage": 1, "epoch": 3, "model": {"w": torch.arange(4.0)}}
    save_checkpoint(tmp_path / "last.pt", payload)
    save_checkpoint(tmp_path / "last.pt", dict(payload, epoch=4))  # replaced in one step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    (tmp_path / "other.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    with pytest.raises(SystemExit, match="damaged"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="previous QAT stage"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(SystemExit, match="not a QMedSAM QAT checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


@pytest.mark.slow  # quantizes, calibrates and rebuilds the real model: over a minute on a busy 2-core machine
def test_checkpoint_rebuilds_the_same_quantized_model(tmp_path, us_sample):
    torch.set_num_threads(2)
    recipe = load_recipe(CONFIGS / "recipe-int8.yaml")
    # The decoder only: quantizing and calibrating the encoder too costs minutes and tests nothing more here.
    model, _ = quantized_litemedsam(recipe, ["mask_decoder"])
    image, box = us_sample
    calibrate(model, [(image, box)])
    with torch.no_grad():
        expected = model(image, box)
    save_checkpoint(tmp_path / "best.pt", {"stage": 2, "epoch": 0, "recipe": recipe.to_dict(),
                                           "quantized_parts": ["mask_decoder"], "model": model.state_dict()})
    rebuilt, checkpoint = model_from_checkpoint(tmp_path / "best.pt")
    with torch.no_grad():
        got = rebuilt(image, box)
    assert checkpoint["stage"] == 2
    for a, b in zip(expected, got):
        assert torch.equal(a, b)  # learned activation scales included: not re-initialised on load


@pytest.fixture(scope="module")
def us_sample(shared_data):
    from training.datasets.cases import BoxPromptDataset, discover

    files = [f for f in discover([shared_data]) if f.case == "2DBox_US_hc18-000"]
    sample = BoxPromptDataset(files, augment=False)[0]
    return sample["image"][None], sample["box"][None]


def test_a_stage_trains_only_its_parts_and_its_student_step_runs(us_sample):
    """qat.py's set-up pieces on the float model: frozen parts get no gradient, the step gives a mask."""
    from training.litemedsam import load_litemedsam
    from training.qat.train import StudentStep, _freeze

    model = load_litemedsam().eval()
    trainable = _freeze(model, ["mask_decoder"])
    assert sum(p.numel() for p in trainable) == sum(p.numel() for p in model.mask_decoder.parameters())
    image, box = us_sample
    embedding, logits, iou = StudentStep(model, ["mask_decoder"])(image, box)
    assert not embedding.requires_grad and logits.requires_grad  # the encoder ran without autograd
    logits.sum().backward()
    with_gradient = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert with_gradient == {"mask_decoder"}


def _run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _log(folder):
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two processes training the real model, then an export: minutes
def test_stages_run_under_torchrun_resume_and_export_int8(tmp_path, shared_data):
    """Stage 1 at world size 2 (DDP, gloo), resumed alone for one more epoch; stage 2 from its best; export."""
    stage1, stage2, models = tmp_path / "stage1", tmp_path / "stage2", tmp_path / "models"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    out = _run(torchrun + ["-m", "training.qat.train", "--config", str(CONFIGS / "qat-stage1.yaml"), *SMOKE,
                           "--set", f"output_dir={stage1}", "--set", f"data=[{shared_data}]"], REPO_ROOT)
    assert "world size 2" in out
    first = load_checkpoint(stage1 / "last.pt")
    assert first["world_size"] == 2 and first["epoch"] == 0
    log = _log(stage1)
    assert [r["epoch"] for r in log] == [-1, 0]  # -1: the calibrated start, validated untrained
    best_record = max(log, key=lambda r: r["val_dice"])  # best.pt is the logged epoch with the best Dice
    assert first["best"] == {"epoch": best_record["epoch"], "val_dice": best_record["val_dice"]}
    assert load_checkpoint(stage1 / "best.pt")["epoch"] == best_record["epoch"]
    assert best_record["val_dice"] > 0.5  # 2 cases the float model segments well; calibration kept that

    # The same command with one more cosine epoch continues from last.pt instead of starting over.
    out = _run([sys.executable, "-m", "training.qat.train", "--config", str(CONFIGS / "qat-stage1.yaml"), *SMOKE,
                "--set", "cosine_epochs=2", "--set", f"output_dir={stage1}", "--set", f"data=[{shared_data}]"],
               REPO_ROOT)
    assert "resuming at epoch 1" in out
    assert [r["epoch"] for r in _log(stage1)] == [-1, 0, 1]
    assert not torch.equal(load_checkpoint(stage1 / "last.pt")["model"]["image_encoder.neck.0.weight"],
                           first["model"]["image_encoder.neck.0.weight"])  # it trained

    out = _run([sys.executable, "-m", "training.qat.train", "--config", str(CONFIGS / "qat-stage2.yaml"), *SMOKE,
                "--set", f"init_checkpoint={stage1 / 'best.pt'}", "--set", f"output_dir={stage2}",
                "--set", f"data=[{shared_data}]"], REPO_ROOT)
    assert "layers newly quantized" in out
    best = load_checkpoint(stage2 / "best.pt")
    assert best["quantized_parts"] == ["image_encoder", "mask_decoder"]
    assert any(key.startswith("mask_decoder.") and "scaling_impl.value" in key for key in best["model"])
    stage1_encoder = load_checkpoint(stage1 / "best.pt")["model"]
    assert all(torch.equal(value, best["model"][key]) for key, value in stage1_encoder.items()
               if key.startswith("image_encoder."))  # stage 2 leaves the encoder as stage 1 made it

    _run([sys.executable, "-m", "training.qat.export", "--checkpoint", str(stage2 / "best.pt"),
          "--name", "smoke-qat", "--models-dir", str(models)], REPO_ROOT)
    entry = find_model("smoke-qat", models)
    assert entry.record["calibration"] == "qat" and entry.record["qat"]["stage"] == 2
    encoder_runs = entry.record["runtime_precisions"]["encoder"]  # the default's recipe: u8 inputs, some i8
    assert encoder_runs.get("FullyConnected i8", 0) + encoder_runs.get("FullyConnected u8", 0) == 40
    case = load_npz_case(shared_data / "imgs" / "2DBox_US_hc18-000.npz")
    masks = Segmenter(entry, threads=1).segment_2d(case.image, case.boxes)
    with np.load(shared_data / "gts" / "2DBox_US_hc18-000.npz") as truth:
        assert label_agreement(masks, truth["gts"]) > 0.8  # the exported INT8 model still finds the head
