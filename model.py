"""SegNet: an encoder-decoder for semantic segmentation whose decoder upsamples with the
max-pooling indices saved by the encoder.

Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for
Image Segmentation", IEEE TPAMI 39(12), 2017. Dropout follows Kendall, Badrinarayanan, Cipolla,
"Bayesian SegNet", arXiv:1511.02680, 2015 (the "central" variant).
"""
import copy
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

# Channel widths per encoder stage; the decoder mirrors them, deepest stage first.
ENCODER_WIDTHS = ((64, 64), (128, 128), (256, 256, 256))
# Three 2x2 poolings need at least 8 pixels per side; a window of the whole image that starts on
# a multiple of 8 pools exactly as the whole image does (the pooling grid, used for tiling).
MIN_SIZE = 2 ** len(ENCODER_WIDTHS)


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (padding 1, no bias: the BatchNorm after it has one), BatchNorm, ReLU."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class EncoderStage(nn.Module):
    """Conv-BN-ReLU layers, then 2x2/2 max pooling that returns its arg-max indices."""

    def __init__(self, in_channels, widths):
        super().__init__()
        channels = (in_channels, *widths)
        self.convs = nn.Sequential(*(ConvBNReLU(a, b) for a, b in zip(channels, channels[1:])))
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)

    def forward(self, x):
        x = self.convs(x)
        size = x.shape[-2:]  # pre-pool size: the decoder unpools back to exactly this
        x, indices = self.pool(x)
        return x, indices, size


class IndexUnpool(nn.MaxUnpool2d):
    """2x2/2 max-unpooling as one scatter of the values to their recorded arg-max positions.

    Equal to F.max_unpool2d for non-overlapping windows (every index is unique), but allowed
    under torch.use_deterministic_algorithms (ATen's kernel is flagged non-deterministic) and
    its backward is a plain gather.
    """

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x, indices, output_size):
        batch, channels = x.shape[:2]
        height, width = output_size[-2:]
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
                memory_format=torch.channels_last):
            # NHWC: scatter over the pixel axis of [N, H*W, C] views, so that neither the
            # values nor the output are copied to another layout (a channels_last model).
            values = x.permute(0, 2, 3, 1).reshape(batch, -1, channels)
            index = indices.permute(0, 2, 3, 1).reshape(batch, -1, channels)
            flat = x.new_zeros(batch, height * width, channels).scatter_(1, index, values)
            return flat.view(batch, height, width, channels).permute(0, 3, 1, 2)
        flat = x.new_zeros(batch, channels, height * width)
        flat.scatter_(2, indices.flatten(2), x.flatten(2))  # in place: no copy of the zeros
        return flat.view(batch, channels, height, width)


class DecoderStage(nn.Module):
    """Max-unpooling with the matching encoder indices, then Conv-BN-ReLU layers."""

    def __init__(self, widths, out_channels):
        super().__init__()
        # The stage keeps its width except the last conv, which maps to the next stage's width.
        channels = (*widths, out_channels)
        self.unpool = IndexUnpool()
        self.convs = nn.Sequential(*(ConvBNReLU(a, b) for a, b in zip(channels, channels[1:])))

    def forward(self, x, indices, size):
        x = self.unpool(x, indices, output_size=size)
        return self.convs(x)


class SegNet(nn.Module):
    """SegNet with a three-stage VGG-style encoder (2x64, 2x128, 3x256 convs) and its mirror.

    Input float [N, in_channels, H, W] with H, W >= 8 (any parity); output logits
    [N, num_classes, H, W]. Binary segmentation is num_classes=2 (background, foreground).
    dropout > 0 gives Bayesian SegNet's "central" variant: dropout after the two deepest encoder
    stages and before the two deepest decoder stages.
    """

    mc_dropout = False  # True during Monte Carlo sampling: dropout on while BatchNorm stays in eval

    def __init__(self, in_channels=1, num_classes=2, dropout=0.0):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2 (binary segmentation is "
                             f"num_classes=2), got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_channels, self.num_classes, self.dropout = in_channels, num_classes, float(dropout)

        stage_inputs = (in_channels, *(widths[-1] for widths in ENCODER_WIDTHS[:-1]))
        self.encoders = nn.ModuleList(
            EncoderStage(c, widths) for c, widths in zip(stage_inputs, ENCODER_WIDTHS))
        # Decoder i mirrors encoder i and ends at the width that encoder i received
        # (64 for the shallowest, so the classifier sees 64 channels).
        decoder_outputs = (ENCODER_WIDTHS[0][0], *stage_inputs[1:])
        self.decoders = nn.ModuleList(
            DecoderStage(widths[::-1], c) for widths, c in zip(ENCODER_WIDTHS, decoder_outputs))
        self.classifier = nn.Conv2d(ENCODER_WIDTHS[0][0], num_classes, kernel_size=1)
        # Dropout on the two deepest stages (Bayesian SegNet "central"); identity when p == 0.
        self.dropout_stages = {len(ENCODER_WIDTHS) - 2, len(ENCODER_WIDTHS) - 1}
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                # fan_in for the classifier keeps the initial logits small (loss ~ ln C).
                mode = "fan_in" if module is self.classifier else "fan_out"
                nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _drop(self, x, stage):
        if self.dropout > 0 and stage in self.dropout_stages:
            return F.dropout(x, self.dropout, training=self.training or self.mc_dropout)
        return x

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SegNet expects input [N, {self.in_channels}, H, W], "
                             f"got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height < MIN_SIZE or width < MIN_SIZE:
            raise ValueError(f"SegNet needs H, W >= {MIN_SIZE}, got {height}x{width}")
        skips = []
        # x: [N, C, H, W] -> [N, 64, H/2, W/2] -> [N, 128, H/4, W/4] -> [N, 256, H/8, W/8]
        for stage, encoder in enumerate(self.encoders):
            x, indices, size = encoder(x)
            x = self._drop(x, stage)
            skips.append((indices, size))
        # [N, 256, H/8, W/8] -> [N, 128, H/4, W/4] -> [N, 64, H/2, W/2] -> [N, 64, H, W]
        for stage in reversed(range(len(self.decoders))):
            x = self._drop(x, stage)
            x = self.decoders[stage](x, *skips[stage])
        return self.classifier(x)  # [N, num_classes, H, W]

    def constructor_args(self):
        """The keyword arguments that rebuild this model (stored in checkpoints)."""
        return {"in_channels": self.in_channels, "num_classes": self.num_classes,
                "dropout": self.dropout}



def context_radius(encoder_widths=ENCODER_WIDTHS):
    """Input pixels on each side of an output pixel that can change it (a bound; 43 here).

    Each 3x3 conv at a grid step of j pixels reaches j further; a 2x2 pooling adds its second
    pixel (j), and an unpooled odd position reads the pooled pixel one step back.
    """
    low, high, step = 0, 0, 1
    for widths in encoder_widths:
        low, high = low - len(widths) * step, high + len(widths) * step + step
        step *= 2
    for widths in reversed(encoder_widths):
        step //= 2
        low, high = low - step - len(widths) * step, high + len(widths) * step
    return max(-low, high)


# torchvision's vgg16_bn "features" indices of conv1_1 .. conv3_3; each BatchNorm follows at +1.
VGG16_BN_CONV_INDICES = (0, 3, 7, 10, 14, 17, 20)


def load_vgg16_bn_encoder(model, state_dict):
    """Initialise the encoder from a VGG16-BN state dict in torchvision's key format.

    The seven encoder convs take conv1_1 .. conv3_3 (`features.0` .. `features.20`) and their
    BatchNorms (`features.1` .. `features.21`), as in the SegNet paper. VGG convs have a bias and
    ours do not (the BatchNorm after them has one), so each bias is folded into the BatchNorm's
    running mean: BN(conv(x) + b) == BN'(conv(x)) with running_mean' = running_mean - b.
    With in_channels=1 the first conv's RGB filters are summed (a gray image is R = G = B, so
    the response to it is unchanged); with 3 they are copied. Every shape is checked.
    `state_dict` is a dict or a path (loaded with weights_only=True); nothing is downloaded.
    """
    source = state_dict
    if not isinstance(state_dict, dict):
        try:
            source = torch.load(state_dict, map_location="cpu", weights_only=True)
        except Exception as error:  # unpickling, zip and I/O errors alike
            raise ValueError(f"{state_dict} could not be read as a state dict with "
                             f"weights_only=True ({type(error).__name__})") from None
    if not isinstance(source, dict):
        raise ValueError(f"{state_dict} holds a {type(source).__name__}, not a state dict")
    if model.in_channels not in (1, 3):
        raise ValueError(f"VGG16 weights fit in_channels 1 (summed) or 3, not {model.in_channels}")
    convs = [m for m in model.encoders.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.encoders.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for conv, norm, index in zip(convs, norms, VGG16_BN_CONV_INDICES):
            weight = _vgg_tensor(source, f"features.{index}.weight", state_dict)
            bias = _vgg_tensor(source, f"features.{index}.bias", state_dict)
            if index == 0 and model.in_channels == 1:
                weight = weight.sum(dim=1, keepdim=True)
            _copy_checked(conv.weight, weight, f"features.{index}.weight", state_dict)
            bn = {name: _vgg_tensor(source, f"features.{index + 1}.{name}", state_dict)
                  for name in ("weight", "bias", "running_mean", "running_var")}
            bn["running_mean"] = bn["running_mean"] - bias
            for name, value in bn.items():
                _copy_checked(getattr(norm, name), value, f"features.{index + 1}.{name}",
                              state_dict)
    return model


# torchvision's ImageNet VGG16-BN; the 8 hex digits in the name start the file's SHA-256.
IMAGENET_VGG16_BN = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth"
IMAGENET = "imagenet"  # --encoder-weights imagenet


def imagenet_weights_file(url=None):
    """Where torch.hub keeps the ImageNet VGG16-BN file ($TORCH_HOME/hub/checkpoints/...); it
    may not be there yet."""
    name = os.path.basename(urlparse(url or IMAGENET_VGG16_BN).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_imagenet_weights(url=None, progress=True):
    """The ImageNet VGG16-BN state dict: downloaded once through torch.hub, its SHA-256 checked
    against the prefix in the file name, and cached (imagenet_weights_file). ValueError naming
    the address and the file to place by hand when the download or the check fails."""
    url = url or IMAGENET_VGG16_BN
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=progress,
                                                  check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:  # URLError is an OSError
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise ValueError(f"could not get the ImageNet VGG16-BN weights from {url} ({reason}); "
                         f"download the file to {imagenet_weights_file(url)} by hand, or pass "
                         f"--encoder-weights FILE") from None


def _vgg_tensor(source, key, origin):
    if key not in source:
        raise ValueError(f"{origin}: no '{key}': not a VGG16-BN state dict in torchvision's "
                         f"format (keys like features.0.weight ... features.21.running_var)")
    return source[key].float()


def _copy_checked(target, value, key, origin):
    if target.shape != value.shape:
        raise ValueError(f"{origin}: '{key}' has shape {tuple(value.shape)}, the SegNet encoder "
                         f"needs {tuple(target.shape)}: is this VGG16 with BatchNorm (vgg16_bn)?")
    target.copy_(value)


def layer_table(model, input_size=(1, 1, 256, 256)):
    """Rows of (layer name, output shape, parameter count) for one forward pass."""
    rows, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.MaxUnpool2d)):
            def hook(mod, inputs, output, name=name):
                out = output[0] if isinstance(output, tuple) else output
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append((name, tuple(out.shape), params))
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_size))
    model.train(was_training)
    for handle in hooks:
        handle.remove()
    return rows


def count_flops(model, input_size=(1, 1, 256, 256)):
    """FLOPs of one forward pass (multiply-add = 2 FLOPs), from torch.utils.flop_counter."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_size))
    model.train(was_training)
    return counter.get_total_flops()


def main():
    model = SegNet()
    print(f"{'layer':<28} {'output shape':<22} {'params':>10}")
    for name, shape, params in layer_table(model):
        print(f"{name:<28} {str(list(shape)):<22} {params:>10,}")
    total = sum(p.numel() for p in model.parameters())
    print(f"parameters: {total:,}")
    print(f"forward FLOPs for a 1x1x256x256 input: {count_flops(model) / 1e9:.2f} GFLOP")



# ---------------------------------------------------------------- inference form

def fold_batchnorm(model):
    """A copy of `model` in eval mode with each BatchNorm folded into the conv before it.

    In eval mode BN(conv(x)) = scale * conv(x) + shift per output channel, with
    scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean * scale; so the
    conv's weight becomes weight * scale and its bias shift (+ bias * scale), and the BN an
    Identity. Outputs equal the original's in eval mode within float rounding. Dropout is
    functional (SegNet._drop), so Monte Carlo sampling (mc_dropout) works on the copy as before.
    For inference only: the copy has no BatchNorm to train, and its state dict (conv biases,
    no BN keys) is not a checkpoint's; `model` itself is left untouched.
    """
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (_, conv), (name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, (nn.BatchNorm2d,
                                                                  nn.SyncBatchNorm)):
                _fold_into_conv(conv, norm)
                setattr(parent, name, nn.Identity())
    return folded


def _fold_into_conv(conv, norm):
    """Give `conv` the weight and bias of conv followed by `norm` (eval mode), in float64."""
    with torch.no_grad():
        weight = conv.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(
            norm.running_mean, dtype=torch.float64)
        scale = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)
        shift = norm.bias.double() - norm.running_mean.double() * scale
        memory_format = (torch.channels_last if _is_channels_last(conv.weight)
                         else torch.contiguous_format)
        folded_weight = (weight * scale[:, None, None, None]).to(conv.weight.dtype)
        conv.weight = nn.Parameter(folded_weight.contiguous(memory_format=memory_format),
                                   requires_grad=False)
        conv.bias = nn.Parameter((bias * scale + shift).to(conv.weight.dtype),
                                 requires_grad=False)


class ConvReLU(nn.Module):
    """A folded conv (weight and bias) and the ReLU after it as one call: on CUDA one cuDNN
    kernel (torch.cudnn_convolution_relu: convolution, bias and ReLU together, the input cast
    to the weights' type as autocast would), elsewhere conv2d then relu. Inference only
    (fuse_conv_relu); it shares the conv's parameters."""

    def __init__(self, conv):
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def forward(self, x):
        if x.is_cuda:
            return torch.cudnn_convolution_relu(x.to(self.weight.dtype), self.weight, self.bias,
                                                self.stride, self.padding, self.dilation,
                                                self.groups)
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding,
                               self.dilation, self.groups))


def fuse_conv_relu(folded):
    """A copy of a folded model (fold_batchnorm) whose conv+bias+ReLU layers run as ConvReLU;
    the classifier stays a plain conv. Equal outputs within rounding; for inference only
    (runtime.fused_if_faster decides whether a GPU runs it faster)."""
    fused = copy.deepcopy(folded)
    for module in fused.modules():
        if (isinstance(module, ConvBNReLU) and isinstance(module[0], nn.Conv2d)
                and module[0].bias is not None and isinstance(module[1], nn.Identity)):
            module[0], module[2] = ConvReLU(module[0]), nn.Identity()
    return fused


def inference_model(model, dtype=None, channels_last=None):
    """SegNet in its inference form: BatchNorm folded (fold_batchnorm), eval mode, no gradients,
    weights cast once to `dtype` (e.g. torch.bfloat16; None keeps float32) so that autocast does
    not re-cast them on every call, and NHWC weights when `channels_last` (None keeps the
    model's current layout). Run it under autocast(dtype) when dtype is not None: the input
    images stay float32 and autocast casts them. `model` itself is left untouched.
    """
    if channels_last is None:
        channels_last = any(_is_channels_last(m.weight) for m in model.modules()
                            if isinstance(m, nn.Conv2d))
    folded = fold_batchnorm(model).requires_grad_(False)
    if dtype is not None:
        folded = folded.to(dtype)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    return folded


def _is_channels_last(weight):
    """True for an NHWC conv weight (one with 1 input channel or a 1x1 kernel is both layouts)."""
    return not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


if __name__ == "__main__":
    main()
