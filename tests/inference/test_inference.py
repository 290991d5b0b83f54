"""Inference form of SegNet: BatchNorm folded into the convs, weights cast once (model.py)."""
import pytest
import torch
import torch.nn as nn

from helpers import random_model
from model import ENCODER_WIDTHS, ConvReLU, SegNet, fold_batchnorm, fuse_conv_relu, inference_model
from segnet import runtime
from segnet.inference import inference, measures


def trained_looking(in_channels=1, num_classes=3, dropout=0.0, seed=0):
    """A SegNet in eval mode whose BatchNorms have non-trivial statistics and affine terms, so
    that a wrong fold (scale or shift) changes the output."""
    torch.manual_seed(seed)
    model = SegNet(in_channels=in_channels, num_classes=num_classes, dropout=dropout)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def relative_error(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_folded_conv_equals_conv_then_batchnorm_in_fp32(in_channels):
    model = trained_looking(in_channels)
    folded = fold_batchnorm(model)
    blocks = {name: module for name, module in model.named_modules()
              if isinstance(module, nn.Sequential)
              and any(isinstance(child, nn.BatchNorm2d) for child in module.children())}
    folded_blocks = dict(folded.named_modules())
    assert len(blocks) == 14  # conv+BN+ReLU: 7 in the encoder, 7 in the decoder
    for name, block in blocks.items():
        images = torch.randn(2, block[0].in_channels, 37, 45)
        with torch.no_grad():
            expected, actual = block(images), folded_blocks[name](images)
        assert relative_error(actual, expected) < 1e-4, name
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("in_channels", [1, 3])
def test_folded_model_equals_original_in_eval_mode(in_channels):
    # Whole-model comparison in float64: in fp32 any reordering of the arithmetic (the fold,
    # or channels_last) can flip the arg-max of a 2x2 max-pool whose two values are within
    # rounding of each other, which moves that value in the decoder: a real but tie-breaking
    # difference that would make an fp32 test depend on the seed. The per-block fp32 test
    # above covers the fold's fp32 accuracy.
    model = trained_looking(in_channels).double()
    images = torch.randn(2, in_channels, 37, 45, dtype=torch.float64)
    with torch.no_grad():
        expected, actual = model(images), fold_batchnorm(model)(images)
    assert relative_error(actual, expected) < 1e-10


def test_fold_leaves_the_original_untouched():
    model = trained_looking().train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fold_batchnorm(model)
    assert model.training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 14
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_fold_uses_running_statistics_even_from_a_model_in_training_mode():
    model = trained_looking().double().train()
    images = torch.randn(1, 1, 24, 40, dtype=torch.float64)
    with torch.no_grad():
        folded_logits = fold_batchnorm(model)(images)
        expected = model.eval()(images)
    assert relative_error(folded_logits, expected) < 1e-10


def test_mc_dropout_still_samples_on_the_folded_model():
    model = trained_looking(dropout=0.5).double()  # float64: see the eval-mode test
    folded = fold_batchnorm(model)
    images = torch.randn(1, 1, 33, 27, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(folded(images), folded(images))  # eval: dropout off
        model.mc_dropout = folded.mc_dropout = True
        torch.manual_seed(7)
        expected = model(images)
        torch.manual_seed(7)
        sampled = folded(images)
        other = folded(images)
    assert relative_error(sampled, expected) < 1e-10  # same dropout masks, same outputs
    assert not torch.allclose(sampled, other)         # and the masks do change per pass


def test_mc_dropout_probs_agree_between_original_and_folded():
    model = trained_looking(dropout=0.5).double()
    folded = fold_batchnorm(model)
    images = torch.randn(2, 1, 16, 24, dtype=torch.float64)
    torch.manual_seed(3)
    mean, entropy, variance = inference.mc_dropout_probs(model, images, samples=4, chunk=2)
    torch.manual_seed(3)
    folded_mean, folded_entropy, folded_variance = inference.mc_dropout_probs(folded, images,
                                                                          samples=4, chunk=2)
    assert torch.allclose(folded_mean, mean, atol=1e-5)
    assert torch.allclose(folded_entropy, entropy, atol=1e-4)
    assert torch.allclose(folded_variance, variance, atol=1e-5)
    assert variance.max() > 0  # dropout really was on
    assert not folded.mc_dropout


def test_inference_model_is_frozen_folded_and_keeps_fp32_without_dtype():
    model = trained_looking()
    prepared = inference_model(model)
    assert not prepared.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in prepared.parameters())
    model64, images = model.double(), torch.randn(2, 1, 19, 31, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(inference_model(model64)(images), model64(images)) < 1e-10


def test_inference_model_channels_last_follows_the_model_or_the_argument():
    model = trained_looking()
    second_conv = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d)][1].weight
    nhwc = torch.channels_last
    assert second_conv(inference_model(model)).is_contiguous()
    assert second_conv(inference_model(model, channels_last=True)).is_contiguous(
        memory_format=nhwc)
    model_nhwc = model.to(memory_format=nhwc)
    kept = inference_model(model_nhwc)
    assert second_conv(kept).is_contiguous(memory_format=nhwc)
    assert not second_conv(kept).is_contiguous()
    model64 = model_nhwc.double()
    images = torch.randn(2, 1, 37, 45, dtype=torch.float64).contiguous(memory_format=nhwc)
    with torch.no_grad():
        expected, actual = model64(images), inference_model(model64)(images)
    assert relative_error(actual, expected) < 1e-10


def test_inference_model_casts_weights_once_to_bf16_and_matches_autocast_accuracy():
    model = trained_looking()
    prepared = inference_model(model, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in prepared.parameters())
    images = torch.randn(1, 1, 16, 24)  # float32 input: autocast casts it
    with torch.no_grad():
        expected = model(images)
        with runtime.autocast(torch.device("cpu"), torch.bfloat16):
            reference = model(images).float()  # the original model under bf16 autocast
            logits = prepared(images)
    assert logits.dtype == torch.bfloat16
    mean_error = lambda logits: float((logits.float() - expected).abs().mean()
                                      / expected.abs().mean())
    # bf16 keeps 8 bits of mantissa: through 15 convs the folded model must be as close to
    # fp32 as autocast of the original is, and predict the same classes almost everywhere.
    assert mean_error(logits) <= 1.25 * mean_error(reference) + 0.01
    assert (logits.argmax(1) == expected.argmax(1)).float().mean() > 0.95


def test_fused_conv_relu_layers_equal_the_folded_model_and_share_its_weights():
    """Every conv+BN+ReLU of the folded model becomes one ConvReLU (its parameters, not a
    copy of them); the classifier stays a conv. Off CUDA it computes conv then ReLU."""
    folded = inference_model(random_model(num_classes=3, seed=2))
    fused = fuse_conv_relu(folded)
    layers = [module for module in fused.modules() if isinstance(module, ConvReLU)]
    convs = [module for module in fused.modules() if isinstance(module, nn.Conv2d)]
    assert len(layers) == 2 * sum(len(widths) for widths in ENCODER_WIDTHS)
    assert convs == [fused.classifier]
    assert not any(isinstance(module, nn.ReLU) for module in fused.modules())
    assert sum(p.numel() for p in fused.parameters()) == sum(
        p.numel() for p in folded.parameters())
    images = torch.randn(2, 1, 24, 40)
    with torch.inference_mode():
        assert torch.allclose(fused(images), folded(images), atol=1e-5)
    assert not any(isinstance(module, ConvReLU) for module in folded.modules())  # a copy


def test_fusion_is_measured_checked_and_kept_off_the_cpu(monkeypatch):
    """measure_fusion times both forms and refuses a fused model whose outputs differ or
    that raises; off CUDA the inference form is the folded model itself."""
    folded = inference_model(random_model(num_classes=3, seed=2))
    measured = runtime.measure_fusion(folded, side=32, batch=1, calls=2)
    assert measured["plain_ms"] > 0 and measured["fused_ms"] > 0
    assert measured["fused"] == (measured["fused_ms"]
                                 < runtime.FUSION_MARGIN * measured["plain_ms"])

    def broken(model):
        fused = fuse_conv_relu(model)
        with torch.no_grad():
            fused.classifier.bias += 1.0  # every logit moves by 1
        return fused
    monkeypatch.setattr(runtime, "fuse_conv_relu", broken)
    assert runtime.measure_fusion(folded, side=32, batch=1, calls=1) == {
        "fused": False, "why": "outputs differ by 1"}

    def raising(model):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED\nmore")
    monkeypatch.setattr(runtime, "fuse_conv_relu", raising)
    assert runtime.measure_fusion(folded, side=32, batch=1, calls=1) == {
        "fused": False, "why": "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"}
    assert runtime.fused_if_faster(folded) is folded
    assert runtime.device_inference_model(random_model(num_classes=3)).training is False


def test_image_confusions_count_each_image_as_confusion_matrix_does():
    preds = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [0, 2]]])
    targets = torch.tensor([[[0, 1], [255, 1]], [[1, 0], [0, 2]]])
    counts = measures.image_confusions(preds, targets, 3, ignore_index=255)
    assert counts.shape == (2, 3, 3) and counts.dtype == torch.int64
    assert counts[0].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]  # the 255 pixel left out
    assert counts[1].tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    for image in range(2):
        assert torch.equal(counts[image], measures.confusion_matrix(preds[image], targets[image],
                                                                    3, 255))


class Pairs(torch.utils.data.Dataset):
    """(normalised image, mask) pairs of two sizes, some pixels ignored."""

    def __init__(self):
        generator = torch.Generator().manual_seed(3)
        self.items = []
        for index, (height, width) in enumerate([(17, 23)] * 3 + [(30, 12)] * 2):
            mask = torch.randint(0, 3, (height, width), generator=generator)
            mask[0, : index + 1] = 255
            self.items.append((torch.randn(1, height, width, generator=generator), mask))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_scoring_on_the_device_counts_what_the_host_arg_max_gives():
    """score_dataset's arg-max, confusion counts and loss where the model runs equal the
    host's: each image's arg-max of batch_probs, counted alone; the loss summed image by image."""
    model = inference_model(random_model(num_classes=3, seed=1))
    dataset = Pairs()
    criterion = nn.NLLLoss(ignore_index=255)
    seen = {}
    scores = inference.score_dataset(model, dataset, 3, 255, batch_size=2, criterion=criterion,
                                     on_image=lambda index, probs, preds, mask: seen.update(
                                         {index: (probs.device.type, preds.dtype)}))
    expected, loss = torch.zeros(3, 3, dtype=torch.int64), 0.0
    for index, (image, mask) in enumerate(dataset.items):
        probs, _ = inference.batch_probs(model, image[None])
        counts = measures.confusion_matrix(probs[0].argmax(0), mask, 3, 255)
        assert torch.equal(scores.per_image[index]["confusion"], counts)
        expected += counts
        loss += float(criterion(probs.clamp(min=1e-12).log(), mask[None]))
    assert torch.equal(scores.confusion.matrix, expected) and scores.images == 5
    assert scores.loss_sum == pytest.approx(loss, rel=1e-6)
    assert seen == {index: ("cpu", torch.int64) for index in range(5)}
