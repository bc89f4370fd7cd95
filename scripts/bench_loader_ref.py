"""The data-loading yardstick for `nas bench loader`: torchvision's ImageFolder and DataLoader
with the DARTS ImageNet transforms on PIL images, on the same folder, printing the same
`images_per_s` field.

  python bench_loader_ref.py --make DIR [--images 2000] [--classes 10]   # a JPEG folder
  python bench_loader_ref.py --data DIR [--workers 2] [--batch-size 128] [--batches 10] [--eval]

The made folder has ImageNet's layout and typical sizes (sides 300 to 500 pixels, JPEG quality
90, smooth gradients, shapes and noise, like photographs rather than pure noise).
"""

import argparse
import json
import os
import time

import numpy as np


def make(root, images, classes, seed=0):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = os.path.join(root, "train", f"n{c:08d}")
        os.makedirs(d, exist_ok=True)
        for i in range(images // classes):
            w, h = int(rng.integers(300, 501)), int(rng.integers(300, 501))
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack(
                [128 + 90 * np.sin(x / rng.uniform(8, 40)), 255 * x / w, 255 * y / h], -1
            ) + rng.normal(0, 8, (h, w, 3))
            img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
            draw = ImageDraw.Draw(img)
            for _ in range(4):
                x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
                box = [x0, y0, x0 + int(rng.integers(20, 150)), y0 + int(rng.integers(20, 150))]
                draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            img.save(os.path.join(d, f"n{c:08d}_{i}.JPEG"), quality=90)


def bench(args):
    import torch
    import torchvision.datasets as dset
    import torchvision.transforms as T

    torch.set_num_threads(1)
    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    if args.eval:
        tf = T.Compose([T.Resize(args.image_size * 256 // 224), T.CenterCrop(args.image_size), T.ToTensor(), normalize])
    else:
        tf = T.Compose(
            [
                T.RandomResizedCrop(args.image_size),
                T.RandomHorizontalFlip(),
                T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
                T.ToTensor(),
                normalize,
            ]
        )
    data = dset.ImageFolder(os.path.join(args.data, "train"), tf)
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True
    )
    it = iter(loader)
    for _ in range(args.warmup):
        next(it)
    start = time.perf_counter()
    images = sum(next(it)[0].shape[0] for _ in range(args.batches))
    secs = time.perf_counter() - start
    print(json.dumps({"workers": args.workers, "images": images, "seconds": secs, "images_per_s": images / secs}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--data")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--eval", action="store_true")
    args = p.parse_args()
    if args.make:
        make(args.make, args.images, args.classes)
    if args.data:
        bench(args)


if __name__ == "__main__":
    main()
