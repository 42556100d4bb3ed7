import torch
import torch.nn as nn

from customresnet import CustomResNet, ResBlock, count_parameters


def layer_types(module):
    return [type(m) for m in module.modules() if not isinstance(m, (nn.Sequential, ResBlock, CustomResNet))]


def test_spec_parameter_count():
    assert count_parameters(CustomResNet()) == 6_573_130


def test_logits_shape_and_no_softmax_inside():
    logits = CustomResNet(width=8)(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 10)
    # A softmax layer would make every row a distribution; logits are unconstrained.
    assert not torch.allclose(logits.sum(1), torch.ones(4))
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in CustomResNet().modules())


def test_layer_order_and_widths():
    net = CustomResNet()
    conv, bn, relu, pool = nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d
    assert layer_types(net.prep) == [conv, bn, relu]
    assert layer_types(net.layer1) == [conv, pool, bn, relu] + [conv, bn, relu] * 2
    assert layer_types(net.layer2) == [conv, pool, bn, relu]
    assert layer_types(net.layer3) == [conv, pool, bn, relu] + [conv, bn, relu] * 2
    assert layer_types(net.head) == [pool, nn.Flatten, nn.Linear]
    convs = [m for m in net.modules() if isinstance(m, conv)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.padding == (1, 1) for c in convs)
    assert all(c.bias is None for c in convs)  # BatchNorm follows every conv
    assert net.head[0].kernel_size == 4
    assert (net.head[2].in_features, net.head[2].out_features) == (512, 10)


def test_residual_adds_the_block_input():
    block = ResBlock(8).eval()
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(block(x), x + block.res(x))


def test_feature_map_sizes():
    net = CustomResNet(width=8).eval()
    x = torch.randn(1, 3, 32, 32)
    sizes = []
    for layer in (net.prep, net.layer1, net.layer2, net.layer3):
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
