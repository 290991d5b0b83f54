"""SegNet shapes, gradients, index-based unpooling, determinism and construction."""
import pytest
import torch
import torch.nn as nn

from model import ENCODER_WIDTHS, SegNet


@pytest.mark.parametrize("height,width", [(8, 8), (37, 53), (64, 64), (97, 130)])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_output_shape(height, width, in_channels, num_classes):
    model = SegNet(in_channels=in_channels, num_classes=num_classes).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, height, width))
    assert logits.shape == (2, num_classes, height, width)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_default_model_on_odd_input():
    assert SegNet()(torch.randn(2, 1, 37, 53)).shape == (2, 2, 37, 53)


def test_backward_gives_every_parameter_a_finite_gradient():
    torch.manual_seed(0)
    model = SegNet(in_channels=1, num_classes=3)
    logits = model(torch.randn(2, 1, 21, 19))
    loss = nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 21, 19)))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_decoder_unpools_at_encoder_argmax_positions():
    torch.manual_seed(0)
    model = SegNet(in_channels=1, num_classes=2).eval()
    pools, unpools = {}, {}

    def save_pool(stage):
        def hook(module, inputs, output):
            pools[stage] = (inputs[0], output[1])  # pre-pool map and its arg-max indices
        return hook

    def save_unpool(stage):
        def hook(module, inputs, output):
            unpools[stage] = (inputs[0], output)
        return hook

    for stage, (encoder, decoder) in enumerate(zip(model.encoders, model.decoders)):
        encoder.pool.register_forward_hook(save_pool(stage))
        decoder.unpool.register_forward_hook(save_unpool(stage))
    with torch.no_grad():
        model(torch.randn(1, 1, 37, 53))

    assert sorted(pools) == sorted(unpools) == [0, 1, 2]
    for stage in pools:
        pre_pool, indices = pools[stage]
        decoder_input, unpooled = unpools[stage]
        assert unpooled.shape == pre_pool.shape
        # Where the recorded arg-max positions are, and nowhere else, can be non-zero.
        recorded = torch.zeros_like(unpooled, dtype=torch.bool).flatten(2)
        recorded.scatter_(2, indices.flatten(2), True)
        recorded = recorded.view_as(unpooled)
        assert not unpooled[~recorded].any()
        nonzero = unpooled != 0
        assert (nonzero <= recorded).all()
        # The indices really are the arg-max of each 2x2 window of the pre-pool map.
        window_max = nn.functional.max_pool2d(pre_pool, 2, 2)
        values_at_indices = pre_pool.flatten(2).gather(2, indices.flatten(2)).view_as(window_max)
        assert torch.equal(values_at_indices, window_max)
        # Each decoder input value lands exactly at its recorded position.
        landed = unpooled.flatten(2).gather(2, indices.flatten(2)).view_as(decoder_input)
        assert torch.equal(landed, decoder_input)


def test_eval_output_is_deterministic():
    model = SegNet(num_classes=3).eval()
    images = torch.randn(2, 1, 40, 44)
    with torch.no_grad():
        assert torch.equal(model(images), model(images))


def test_state_dict_round_trip_reproduces_output():
    torch.manual_seed(1)
    model = SegNet(in_channels=3, num_classes=4)
    model(torch.randn(2, 3, 32, 32))  # one training step of BN statistics so they are non-trivial
    model.eval()
    fresh = SegNet(in_channels=3, num_classes=4).eval()
    fresh.load_state_dict(model.state_dict())
    images = torch.randn(1, 3, 33, 35)
    with torch.no_grad():
        assert torch.equal(model(images), fresh(images))


def expected_parameter_count(in_channels, num_classes):
    """Convs (no bias) + BN (weight, bias) from the layer widths, plus the 1x1 classifier."""
    encoder = []
    channels = in_channels
    for widths in ENCODER_WIDTHS:
        for width in widths:
            encoder.append((channels, width))
            channels = width
    decoder_widths = [(256, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64),
                      (64, 64)]
    total = 0
    for c_in, c_out in encoder + decoder_widths:
        total += c_in * c_out * 9 + 2 * c_out
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("in_channels,num_classes", [(1, 2), (3, 12)])
def test_parameter_count_matches_layer_widths(in_channels, num_classes):
    model = SegNet(in_channels=in_channels, num_classes=num_classes)
    assert sum(p.numel() for p in model.parameters()) == expected_parameter_count(
        in_channels, num_classes)


def test_architecture_inventory():
    model = SegNet(in_channels=3, num_classes=12)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    unpools = [m for m in model.modules() if isinstance(m, nn.MaxUnpool2d)]
    assert len(pools) == 3 and all(p.return_indices for p in pools)
    assert len(unpools) == 3
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    def widths(stage):
        return [m.out_channels for m in stage.modules() if isinstance(m, nn.Conv2d)]

    assert [widths(encoder) for encoder in model.encoders] == [[64, 64], [128, 128],
                                                               [256, 256, 256]]
    # Deepest decoder first, as the data flows: 256, 256, 128; 128, 64; 64, 64.
    assert [widths(decoder) for decoder in reversed(model.decoders)] == [[256, 256, 128],
                                                                         [128, 64], [64, 64]]
    assert len(convs) == 15 and model.classifier.out_channels == 12
    # BatchNorm directly after every conv but the classifier.
    modules = list(model.modules())
    for conv in convs[:-1]:
        following = modules[modules.index(conv) + 1]
        assert isinstance(following, nn.BatchNorm2d) and following.num_features == conv.out_channels
    assert convs[-1] is model.classifier and convs[-1].kernel_size == (1, 1)


def test_large_multiclass_input():
    model = SegNet(in_channels=3, num_classes=12).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 360, 480)).shape == (1, 12, 360, 480)


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 0}, {"in_channels": 0},
                                    {"in_channels": -1}, {"num_classes": 2.5},
                                    {"dropout": 1.0}, {"dropout": -0.1}])
def test_invalid_constructor_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        SegNet(**kwargs)


def test_wrong_input_raises_clear_error():
    model = SegNet(in_channels=1)
    with pytest.raises(ValueError, match="expects input"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=">= 8"):
        model(torch.randn(1, 1, 7, 16))


def fake_vgg16_bn_state_dict(seed=0):
    """Random tensors with torchvision vgg16_bn's key names and shapes (features + classifier)."""
    generator = torch.Generator().manual_seed(seed)
    config = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    state, index, channels = {}, 0, 3
    for item in config:
        if item == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(item, channels, 3, 3, generator=generator)
        state[f"features.{index}.bias"] = torch.randn(item, generator=generator)
        for name, value in (("weight", torch.rand(item, generator=generator) + 0.5),
                            ("bias", torch.randn(item, generator=generator)),
                            ("running_mean", torch.randn(item, generator=generator)),
                            ("running_var", torch.rand(item, generator=generator) + 0.5)):
            state[f"features.{index + 1}.{name}"] = value
        state[f"features.{index + 1}.num_batches_tracked"] = torch.tensor(100)
        index, channels = index + 3, item
    state["classifier.0.weight"] = torch.randn(4096, 512 * 7 * 7, generator=generator)[:8]
    return state


@pytest.mark.parametrize("in_channels", [1, 3])
def test_vgg16_bn_encoder_initialisation(in_channels, tmp_path):
    from model import load_vgg16_bn_encoder
    state = fake_vgg16_bn_state_dict()
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)
    model = load_vgg16_bn_encoder(SegNet(in_channels=in_channels), path).eval()
    first_conv = model.encoders[0].convs[0][0]
    expected = state["features.0.weight"]
    if in_channels == 1:
        expected = expected.sum(1, keepdim=True)
    assert torch.equal(first_conv.weight, expected)
    last_bn = model.encoders[2].convs[2][1]
    assert torch.equal(last_bn.running_var, state["features.21.running_var"])
    assert torch.allclose(last_bn.running_mean,
                          state["features.21.running_mean"] - state["features.20.bias"])
    # The first block computes exactly VGG's conv(+bias) -> BN -> ReLU on a gray image.
    gray = torch.rand(1, 1, 12, 12)
    rgb = gray.expand(1, 3, 12, 12)
    reference = nn.functional.conv2d(rgb, state["features.0.weight"], state["features.0.bias"],
                                     padding=1)
    reference = nn.functional.batch_norm(
        reference, state["features.1.running_mean"], state["features.1.running_var"],
        state["features.1.weight"], state["features.1.bias"]).relu()
    with torch.no_grad():
        ours = model.encoders[0].convs[0](gray if in_channels == 1 else rgb)
    assert torch.allclose(ours, reference, atol=1e-4)


def test_vgg16_bn_wrong_file_is_a_clear_error():
    from model import load_vgg16_bn_encoder
    state = fake_vgg16_bn_state_dict()
    with pytest.raises(ValueError, match="in_channels 1"):
        load_vgg16_bn_encoder(SegNet(in_channels=2), state)
    del state["features.14.weight"]
    with pytest.raises(ValueError, match="features.14.weight"):
        load_vgg16_bn_encoder(SegNet(), state)
    plain_vgg = fake_vgg16_bn_state_dict()
    plain_vgg["features.3.weight"] = torch.randn(64, 32, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        load_vgg16_bn_encoder(SegNet(), plain_vgg)


@pytest.mark.parametrize("channels_last", [False, True])
def test_index_unpool_equals_max_unpool2d_forward_and_backward(channels_last):
    from model import IndexUnpool
    torch.manual_seed(0)
    pre_pool = torch.randn(2, 3, 9, 13, requires_grad=True)
    pooled, indices = nn.functional.max_pool2d(pre_pool, 2, 2, return_indices=True)
    values = torch.randn_like(pooled, requires_grad=True)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    ours = IndexUnpool()(values.contiguous(memory_format=layout),
                         indices.contiguous(memory_format=layout), output_size=(9, 13))
    reference = nn.functional.max_unpool2d(values, indices, 2, 2, output_size=(9, 13))
    assert torch.equal(ours, reference)
    assert ours.is_contiguous(memory_format=layout)  # NHWC in, NHWC out: no layout copies
    grad = torch.randn_like(ours)
    (ours_grad,) = torch.autograd.grad(ours, values, grad)
    (reference_grad,) = torch.autograd.grad(reference, values, grad)
    assert torch.equal(ours_grad, reference_grad)


def test_vgg16_bn_unreadable_file(tmp_path):
    from model import load_vgg16_bn_encoder
    path = tmp_path / "not_weights.pth"
    path.write_text("hello")
    with pytest.raises(ValueError, match="could not be read"):
        load_vgg16_bn_encoder(SegNet(), path)
