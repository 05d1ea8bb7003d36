# PyTorch's side of `bench/train.ts --vs-torch`: one training row as one JSON line, the same step as the
# project's bench (backbone + ArcFace over 1,000 classes, sample rate 1, SGD momentum 0.9, wd 5e-4,
# random images, fixed labels). The backbones are written here in the reference's shapes (insightface
# arcface_torch's iresnet.py and mobilefacenet.py: same layers, widths, eps and order), fp32 on the CPU
# with oneDNN, `--threads` intra-op threads.
#   /usr/bin/python3 bench/torch_train.py --model r18 [--batch 16] [--seconds 20] [--warmup 4] [--threads 2]
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = conv3x3(inplanes, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = self.downsample(x) if self.downsample is not None else x
        return out + identity


class IResNet(nn.Module):
    def __init__(self, layers, num_features=512, input_size=112):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-05)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1])
        self.layer3 = self._make_layer(256, layers[2])
        self.layer4 = self._make_layer(512, layers[3])
        self.bn2 = nn.BatchNorm2d(512, eps=1e-05)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)

    def _make_layer(self, planes, blocks):
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 2, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, 2, downsample)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(x))


def conv_block(cin, cout, k, s, p, groups, act):
    mods = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        mods.append(nn.PReLU(cout))
    return nn.Sequential(*mods)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, residual, stride, groups):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            conv_block(cin, groups, 1, 1, 0, 1, True),
            conv_block(groups, groups, 3, stride, 1, groups, True),
            conv_block(groups, cout, 1, 1, 0, 1, False),
        )

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


def residual(c, n, groups):
    return nn.Sequential(*[DepthWise(c, c, True, 1, groups) for _ in range(n)])


class MobileFaceNet(nn.Module):
    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2, input_size=112):
        super().__init__()
        s = scale
        first = conv_block(64 * s, 64 * s, 3, 1, 1, 64, True) if blocks[0] == 1 else residual(64 * s, blocks[0], 128)
        self.layers = nn.Sequential(
            conv_block(3, 64 * s, 3, 2, 1, 1, True),
            first,
            DepthWise(64 * s, 64 * s, False, 2, 128),
            residual(64 * s, blocks[1], 128),
            DepthWise(64 * s, 128 * s, False, 2, 256),
            residual(128 * s, blocks[2], 256),
            DepthWise(128 * s, 128 * s, False, 2, 512),
            residual(128 * s, blocks[3], 256),
        )
        self.conv_sep = conv_block(128 * s, 512, 1, 1, 0, 1, True)
        k = input_size // 16
        self.features = nn.Sequential(
            conv_block(512, 512, k, 1, 0, 512, False),
            nn.Flatten(),
            nn.Linear(512, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.features(self.conv_sep(self.layers(x)))


IRESNET = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3]}


def backbone(name):
    if name in IRESNET:
        return IResNet(IRESNET[name])
    if name == "mbf":
        return MobileFaceNet()
    raise SystemExit(f"unknown model {name}")


class ArcFace(nn.Module):
    """Partial FC at sample rate 1: normalised embeddings x normalised class centres, cos(theta + m) on the target."""

    def __init__(self, classes, features, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.normal(0, 0.01, (classes, features)))
        self.s, self.m = s, m

    def forward(self, emb, labels):
        logits = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1, 1)
        idx = torch.arange(len(labels))
        target = logits[idx, labels]
        with torch.no_grad():
            theta = torch.arccos(target)
        logits = logits.clone()
        logits[idx, labels] = torch.cos(theta + self.m)
        return F.cross_entropy(logits * self.s, labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    batch = a.batch or {"mbf": 32, "r100": 8}.get(a.model, 16)
    net = backbone(a.model).train()
    head = ArcFace(1000, 512)
    opt = torch.optim.SGD([{"params": net.parameters()}, {"params": head.parameters()}], lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.rand(batch, 3, 112, 112) * 2 - 1
    labels = torch.tensor([(i * 37) % 1000 for i in range(batch)])

    def step():
        loss = head(net(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5)
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    for _ in range(max(1, a.warmup)):
        step()
    warmup_s = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    while len(times) < 3 or (time.perf_counter() - start < a.seconds and len(times) < 200):
        t = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t)
    cpu_ms = (time.process_time() - cpu0) * 1000 / len(times)
    times.sort()
    ms = times[len(times) // 2] * 1000
    print(json.dumps({
        "bench": "train", "engine": f"torch-{torch.__version__}", "model": a.model, "batch": batch, "inputSize": 112,
        "threads": torch.get_num_threads(), "imgPerSec": round(batch * 1000 / ms, 2), "msPerStep": round(ms, 1), "cpuMsPerStep": round(cpu_ms),
        "steps": len(times), "warmupS": round(warmup_s, 1), "loss": round(loss, 4),
        "peakRssMiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load1": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
