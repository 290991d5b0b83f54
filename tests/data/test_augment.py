"""The batched training augmentation (augment.py): the device's half gives what the per-sample
transform gives for the same draws, windows cut at the image's edges, the collate's types, the
train loader as one stream across epochs, and where the augmentation runs."""
import dataclasses

import pytest
import torch

from helpers import write_tiny_dataset
from segnet.data.feed import augment, loaders
from segnet.data.check.scan import scan_dataset
from segnet.data.feed.dataset import SegmentationDataset, pack_sample
from segnet.data.pixels.images import normalize
from segnet.data.feed.transforms import TrainTransform, WorkerCrop
from segnet.plan.plan import Plan

NORMALIZATION = {"mean": [0.4], "std": [0.2]}


def sample_pair(height, width, seed, channels=1):
    """An 8-bit image (k / 255 values) and a 3-class mask with structure to misalign."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (channels, height, width), generator=generator) / 255
    mask = (torch.arange(height)[:, None] // 5 + torch.arange(width)[None, :] // 7) % 3
    return image.float(), mask


def per_sample(transform, image, mask, seed, focus=None):
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, mask, focus=focus)
    return normalize(out_image, NORMALIZATION), out_mask


def on_device(transform, pairs, seeds, focus=None):
    """The worker's cut of each (uint8-packed) pair with its seed, collated, finished on the
    CPU device."""
    crops = []
    for (image, mask), seed in zip(pairs, seeds):
        torch.manual_seed(seed)
        packed_image, packed_mask = pack_sample(image, mask)
        crops.append(WorkerCrop(transform)(packed_image, packed_mask, focus=focus))
    batch = augment.crop_collate(crops, ignore_index=transform.ignore_index)
    assert batch[0].dtype == torch.uint8  # 8-bit images travel as bytes
    return augment.FinishBatch(transform, NORMALIZATION, torch.device("cpu"))(*batch)


@pytest.mark.parametrize("settings", [
    {"crop_size": (20, 28), "scale": (0.6, 1.4), "rotate": 30, "jitter": 0.3, "noise": 0.05},
    {"crop_size": 24, "scale": None, "rotate": 0, "jitter": 0, "noise": 0, "base_scale": 0.5},
    # a crop larger than the image
    {"crop_size": 48, "scale": (0.9, 1.1), "rotate": 10, "jitter": 0.1, "noise": 0.0},
])
def test_the_device_half_gives_the_per_sample_transform_for_the_same_draws(settings):
    transform = TrainTransform(ignore_index=255, **settings)
    pairs = [sample_pair(33, 41, seed=0), sample_pair(30, 37, seed=1)]
    seeds = [11, 12]
    images, masks = on_device(transform, pairs, seeds)
    for index, ((image, mask), seed) in enumerate(zip(pairs, seeds)):
        expected_image, expected_mask = per_sample(transform, image, mask, seed)
        assert images[index].shape == expected_image.shape
        assert torch.allclose(images[index], expected_image, atol=1e-4)
        assert torch.equal(masks[index], expected_mask)
    assert masks.dtype == torch.int64 and images.dtype == torch.float32


def test_a_focus_centres_the_device_crop_as_it_centres_the_per_sample_one():
    transform = TrainTransform(crop_size=16, scale=(0.8, 1.2), rotate=0, jitter=0, noise=0)
    image, mask = sample_pair(40, 40, seed=2)
    mask[30, 5] = 2
    images, masks = on_device(transform, [(image, mask)], [5], focus=(30, 5))
    expected_image, expected_mask = per_sample(transform, image, mask, 5, focus=(30, 5))
    assert torch.equal(masks[0], expected_mask)
    assert torch.allclose(images[0], expected_image, atol=1e-4)


def test_whole_images_of_different_sizes_are_padded_like_pad_collate():
    """No crop: each output is the scaled image; smaller ones padded with 0 / ignore."""
    transform = TrainTransform(crop_size=None, scale=None, rotate=0, hflip=True, vflip=True,
                               jitter=0.2, noise=0.01, ignore_index=9)
    pairs = [sample_pair(12, 20, seed=3), sample_pair(18, 10, seed=4)]
    images, masks = on_device(transform, pairs, [1, 2])
    assert images.shape == (2, 1, 18, 20) and masks.shape == (2, 18, 20)
    for index, ((image, mask), seed) in enumerate(zip(pairs, [1, 2])):
        expected_image, expected_mask = per_sample(transform, image, mask, seed)
        height, width = expected_mask.shape
        assert torch.equal(masks[index, :height, :width], expected_mask)
        assert torch.allclose(images[index, :, :height, :width], expected_image, atol=1e-4)
        assert (masks[index, height:] == 9).all() and (masks[index, :, width:] == 9).all()
        assert (images[index, :, height:] == 0).all() and (images[index, :, :, width:] == 0).all()


def test_noise_comes_from_the_sample_not_from_its_batch():
    transform = TrainTransform(crop_size=16, scale=None, rotate=0, jitter=0, noise=0.1)
    pair = sample_pair(16, 16, seed=6)
    alone, _ = on_device(transform, [pair], [3])
    together, _ = on_device(transform, [sample_pair(16, 16, seed=7), pair], [4, 3])
    assert torch.allclose(alone[0], together[1], atol=1e-6)
    plain, _ = on_device(TrainTransform(crop_size=16, scale=None, rotate=0, jitter=0,
                                        noise=0), [pair], [3])
    assert (alone[0] - plain[0]).abs().max() > 0.01  # there is noise


def test_cut_pads_where_the_window_leaves_the_image():
    tensor = torch.arange(12).view(3, 4)
    window = augment.cut(tensor, (-1, 2, 3, 4), fill=-5)
    assert window.tolist() == [[-5, -5, -5, -5], [2, 3, -5, -5], [6, 7, -5, -5]]
    assert augment.cut(tensor, (1, 1, 2, 2), fill=0).tolist() == [[5, 6], [9, 10]]


def test_the_collate_keeps_an_ignore_index_the_mask_type_cannot_hold():
    params = augment.draws(out_height=2, out_width=2)
    small = (torch.zeros(1, 2, 2, dtype=torch.uint8), torch.ones(2, 2, dtype=torch.uint8), params)
    crop = augment.cut_sample(*small[:2], params, ignore_index=300)
    assert crop[1].dtype == torch.int64  # uint8 cannot hold 300
    images, masks, rows = augment.crop_collate([crop, small], ignore_index=300)
    assert masks.dtype == torch.int64 and (masks[1, 2:] == 300).all()
    float_image = (torch.rand(1, 2, 2), torch.ones(2, 2, dtype=torch.uint8), params)
    images, _, _ = augment.crop_collate([small, float_image], ignore_index=255)
    assert images.dtype == torch.float32  # one non-8-bit image: all as float, same scale
    assert rows.shape == (2, len(augment.FIELDS))


def stream_plan(**changes):
    return dataclasses.replace(Plan(), crop_size=16, batch_size=2, workers=0, cache=True,
                               **changes)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_dataset(tmp_path_factory.mktemp("stream") / "data",
                              counts=(("train", 5), ("val", 1)))
    return root, scan_dataset(root)


def test_the_train_loader_is_one_stream_across_epochs(tiny):
    root, info = tiny
    plan = stream_plan()
    train_set, _ = loaders.build_datasets(plan, root, info, device_finish=True)
    loader = loaders.build_loader(plan, train_set, torch.device("cpu"))
    assert len(loader) == 2  # 5 images, batches of 2, the last partial one dropped
    first = list(loader.epoch(0))
    iterator = loader.iterator
    rest = []
    for batch in loader.epoch(1):  # stopped after one batch, then continued: no new iterator
        rest.append(batch)
        break
    rest += list(loader.epoch(1, 1))
    assert loader.iterator is iterator and loader.position == (2, 0)
    fresh = loaders.build_loader(plan, train_set, torch.device("cpu"))
    for (image, mask), (again_image, again_mask) in zip(rest, fresh.epoch(1)):
        assert torch.equal(image, again_image) and torch.equal(mask, again_mask)
    assert not torch.equal(first[0][0], rest[0][0])  # another epoch: other draws
    assert first[0][0].shape == (2, 1, 16, 16) and first[0][1].dtype == torch.int64


def test_where_the_augmentation_ends():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loaders.finish_on_device(stream_plan(), cuda)
    assert loaders.finish_on_device(stream_plan(), cpu) == loaders.DEVICE_FINISH_ON_CPU
    assert not loaders.finish_on_device(stream_plan(image_size=32), cuda)  # resized in workers
    assert not loaders.finish_on_device(stream_plan(overfit_batch=True), cuda)
    assert not loaders.finish_on_device(stream_plan(train_scale=0.2), cuda)


def test_a_worker_crop_dataset_hands_over_bytes_and_draws(tiny):
    root, info = tiny
    dataset = SegmentationDataset(root, "train", info, cache=True, transform=WorkerCrop(
        TrainTransform(crop_size=8, ignore_index=255)))
    image, mask, params = dataset[0]
    assert image.dtype == torch.uint8 and mask.dtype == torch.uint8
    assert params.shape == (len(augment.FIELDS),) and params[augment.FIELD["out_height"]] == 8
    assert image.shape[-2:] == mask.shape and min(mask.shape) >= 8
