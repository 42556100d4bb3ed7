"""The 9-layer ResNet of Myrtle's "How to train your ResNet" (DAWNBench, CIFAR-10).

    prep    conv 3->64                                  32x32
    layer1  conv 64->128, pool, + residual(128)         16x16
    layer2  conv 128->256, pool                          8x8
    layer3  conv 256->512, pool, + residual(512)         4x4
    head    max-pool 4, flatten, linear 512->10

Every conv is 3x3, stride 1, padding 1, without bias because a BatchNorm follows it.
`forward` returns logits: the softmax belongs to the loss in training and to the caller in
prediction (a softmax layer in front of CrossEntropyLoss silently costs accuracy).
"""
import torch.nn as nn


def conv_bn(c_in, c_out, pool=False):
    """Conv 3x3 -> [MaxPool 2] -> BatchNorm -> ReLU."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """R(x) = conv_bn(conv_bn(x)); the layer adds it to its input: out = x + R(x)."""

    def __init__(self, channels):
        super().__init__()
        self.res = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x):
        return x + self.res(x)


class CustomResNet(nn.Module):
    """`width` is the prep layer's channel count; the spec is 64 (6,573,130 parameters).
    Tests and quick experiments use a thin copy (e.g. width=8): the same layers, fewer channels."""

    def __init__(self, num_classes=10, width=64):
        super().__init__()
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 8 * width
        self.prep = conv_bn(3, c1)
        self.layer1 = nn.Sequential(conv_bn(c1, c2, pool=True), ResBlock(c2))
        self.layer2 = conv_bn(c2, c3, pool=True)
        self.layer3 = nn.Sequential(conv_bn(c3, c4, pool=True), ResBlock(c4))
        self.head = nn.Sequential(nn.MaxPool2d(4), nn.Flatten(), nn.Linear(c4, num_classes))

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
