"""Random multi-scale CNN (Ustyuzhaninov et al. 2017) features: FFT for large filters vs
direct circular conv2d for all sizes (naive dense PyTorch), forward and forward+backward.

    python -m benchmarks.random_cnn [--quick] [--no-write] [--threads N]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks._harness import Bench, parser, setup_threads
from difftransforms.features import RandomMultiscaleCNN


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    setup_threads(args.threads)
    sizes_px = [128] if args.quick else [128, 256]
    bench = Bench("RandomMultiscaleCNN, 8 sizes (3..55) x 64 maps, 1x3xHxW float32")
    for n in sizes_px:
        net = RandomMultiscaleCNN(3, channels_per_size=64).to(args.device)
        weights = [net.weight(s) for s in net.sizes]
        x = torch.rand(1, 3, n, n, device=args.device, requires_grad=True)

        def ours(backward: bool, net=net, x=x):
            feats = net(x)
            if backward:
                sum(f.square().mean() for f in feats.values()).backward()

        def dense(backward: bool, weights=weights, x=x):
            feats = []
            for w in weights:
                p = w.shape[-1] // 2
                feats.append(F.relu(F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), w)))
            if backward:
                sum(f.square().mean() for f in feats).backward()

        for backward in (False, True):
            case = f"{n}x{n} {'fwd+bwd' if backward else 'forward'}"
            bench.compare(case, lambda b=backward: ours(b),
                          {"direct conv2d": lambda b=backward: dense(b)},
                          repeat=args.repeat)
    bench.note("ours: conv2d for sizes 3, 5, 7 and one rfft2 + cached filter spectra + irfft2 "
               "per size for 11..55 (threshold FFT_MIN_SIZE = 11, from measurement)")
    bench.report(write=not args.no_write)


if __name__ == "__main__":
    main()
