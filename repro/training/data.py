"""Image classification data for the training experiments, held in memory as uint8 tensors.

Three sources, one shape (``N x 3 x H x W`` uint8 images, ``N`` int64 labels):

* CIFAR-10 in its own on-disk Python format: ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``, pickles of ``{b"data": N x 3072 uint8, b"labels": [...]}`` (the directory, or
  the one above it holding ``cifar-10-batches-py``).
* An ImageFolder (``<class>/<image>``): ``PATH/train`` with ``PATH/val`` or ``PATH/test`` if present,
  otherwise one folder split 5:1, seeded. Images are resized and center-cropped to ``resolution``.
* ``synthetic_shapes``: generated, so the experiments run without any download (see its docstring).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class DataError(ValueError):
    """A ``--data`` path that is missing or holds no usable data set; the message says which and why."""


@dataclass
class ImageData:
    name: str  # how the report names it
    train_x: torch.Tensor  # N x 3 x H x W, uint8
    train_y: torch.Tensor  # N, int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise DataError(
                    f"{self.name}: {split} images must be N x 3 x H x W uint8, got {x.dtype} {tuple(x.shape)}"
                )
            if len(x) != len(y) or len(x) == 0:
                raise DataError(f"{self.name}: {split} split has {len(x)} images and {len(y)} labels")
            if int(y.min()) < 0 or int(y.max()) >= len(self.classes):
                raise DataError(f"{self.name}: {split} labels outside 0..{len(self.classes) - 1}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return self.train_x.shape[-1]

    def subset(self, train: int | None = None, test: int | None = None) -> "ImageData":
        """The first ``train`` / ``test`` images of each split (for quick runs)."""
        return ImageData(
            self.name,
            self.train_x[:train],
            self.train_y[:train],
            self.test_x[:test],
            self.test_y[:test],
            self.classes,
            self.description,
        )


# --- CIFAR-10, the data set's own format ---------------------------------------------------------


def _cifar_dir(path: Path) -> Path | None:
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / CIFAR_TRAIN_FILES[0]).is_file():
            return candidate
    return None


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # the data set's own format (Python 2 pickles)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: expected N x 3072 pixels and N labels, got {data.shape} and {labels.shape}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def load_cifar10(path: str | Path) -> ImageData:
    root = _cifar_dir(Path(path))
    if root is None:
        raise DataError(
            f"{path}: no CIFAR-10 python batches (data_batch_1 .. 5, test_batch) here or in cifar-10-batches-py/"
        )
    missing = [name for name in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE) if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root}: CIFAR-10 is incomplete, missing {', '.join(missing)}")
    parts = [_read_cifar_batch(root / name) for name in CIFAR_TRAIN_FILES]
    test_x, test_y = _read_cifar_batch(root / CIFAR_TEST_FILE)
    return ImageData(
        "CIFAR-10",
        torch.cat([x for x, _ in parts]),
        torch.cat([y for _, y in parts]),
        test_x,
        test_y,
        CIFAR_CLASSES,
        f"CIFAR-10 from {root} (python format)",
    )


# --- ImageFolder -----------------------------------------------------------------------------------


def _read_folder(root: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.Resize(resolution), transforms.CenterCrop(resolution), transforms.PILToTensor()]
    )
    try:
        folder = datasets.ImageFolder(
            str(root), transform=transform, loader=lambda p: datasets.folder.default_loader(p).convert("RGB")
        )
    except (FileNotFoundError, OSError) as err:  # torchvision: no class folders or no images in them
        raise DataError(f"{root}: not an image folder ({err})") from None
    images, labels = [], []
    for index in range(len(folder)):
        try:
            image, label = folder[index]
        except OSError as err:
            raise DataError(f"{folder.samples[index][0]}: unreadable image ({err})") from None
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), tuple(folder.classes)


def load_image_folder(path: str | Path, resolution: int = 32, seed: int = 0) -> ImageData:
    root = Path(path)
    test_root = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if (root / "train").is_dir() and test_root is not None:
        train_x, train_y, classes = _read_folder(root / "train", resolution)
        test_x, test_y, test_classes = _read_folder(test_root, resolution)
        if test_classes != classes:
            raise DataError(f"{root}: train/ and {test_root.name}/ have different class folders")
        how = f"train/ and {test_root.name}/"
    else:
        x, y, classes = _read_folder(root, resolution)
        if len(x) < 2:
            raise DataError(f"{root}: needs at least 2 images to hold one out, found {len(x)}")
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        held_out = max(1, len(x) // 6)
        test_idx, train_idx = order[:held_out], order[held_out:]
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        how = f"one folder, {held_out} of {len(x)} images held out (seed {seed})"
    return ImageData(
        f"ImageFolder {root.name}",
        train_x,
        train_y,
        test_x,
        test_y,
        classes,
        f"ImageFolder {root} ({how}), resized to {resolution}x{resolution}",
    )


def load_data(path: str | Path | None, resolution: int = 32, seed: int = 0) -> ImageData:
    """``path`` as CIFAR-10 (python format) or an ImageFolder; ``None``: the generated default."""
    if path is None:
        return synthetic_shapes(resolution=resolution, seed=seed)
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file or directory")
    if not path.is_dir():
        raise DataError(f"--data {path}: not a directory (expected CIFAR-10 python batches or an image folder)")
    if _cifar_dir(path) is not None or any((path / n).is_file() for n in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)):
        return load_cifar10(path)
    return load_image_folder(path, resolution, seed)


# --- generated default -----------------------------------------------------------------------------

SHAPES = ("disk", "square", "triangle", "cross", "ring")
STRIPES = ("near-vertical stripes", "near-horizontal stripes")  # bars across x, bars across y
SYNTHETIC_NAME = "generated shapes"
SYNTHETIC_CLASSES = tuple(f"{shape}, {stripes}" for stripes in STRIPES for shape in SHAPES)


def _shape_masks(
    kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, radius: torch.Tensor, pixel: float
) -> torch.Tensor:
    """Masks (N x H x W) of each image's shape, in its own rotated coordinates ``u, v``, anti-aliased
    over about one pixel (``pixel``: its width in those coordinates)."""
    r = torch.sqrt(u**2 + v**2)
    inside = torch.stack(
        [
            r - radius,  # disk
            torch.maximum(u.abs(), v.abs()) - 0.8 * radius,  # square
            torch.maximum(v - 0.5 * radius, (math.sqrt(3) * u.abs() - v) / 2 - 0.5 * radius),  # triangle
            torch.minimum(
                torch.maximum(u.abs() - 0.3 * radius, v.abs() - radius),  # cross
                torch.maximum(v.abs() - 0.3 * radius, u.abs() - radius),
            ),
            (r - 0.75 * radius).abs() - 0.25 * radius,  # ring
        ]
    )  # signed: negative inside
    chosen = inside.gather(0, kind.view(1, -1, 1, 1).expand(1, *inside.shape[1:]))[0]
    return torch.sigmoid(-chosen / (0.5 * pixel))


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """N hues, saturations, values in [0, 1] to N x 3 RGB."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * h.view(-1, 1)) % 6
    return v.view(-1, 1) - v.view(-1, 1) * s.view(-1, 1) * (torch.minimum(k, 4 - k).clamp(0, 1))


def synthetic_shapes(
    n_train: int = 10_000,
    n_test: int = 2_000,
    resolution: int = 32,
    seed: int = 0,
    noise: float = 0.1,
    distractor: float = 0.5,
) -> ImageData:
    """Ten classes of generated images: a shape (disk, square, triangle, cross, ring) filled with
    stripes that run near-horizontal or near-vertical, on a cluttered background.

    Each image draws its shape's position, size and rotation, the stripes' angle (within 30 degrees
    of the class's axis), period and phase, a colour (hue around the class's own, overlapping the
    neighbouring classes': a weak cue, as colour is in natural images), a smooth random background
    with a half-transparent distractor patch of stripes of the other orientation, and pixel noise.
    The label depends on two things a network must combine (shape outline and the texture inside
    it); only colour hints at it otherwise. Reproducible: the same ``seed`` gives the same images;
    train and test are disjoint draws.
    """
    generator = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    labels = torch.randint(0, len(SYNTHETIC_CLASSES), (n,), generator=generator)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    s = resolution
    grid = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    x, y = x.expand(n, s, s), y.expand(n, s, s)

    # Background: low-frequency colour noise (4x4 upsampled), plus a distractor stripe patch.
    background = F.interpolate(uniform(0.2, 0.8, 3, 4, 4), size=(s, s), mode="bilinear", align_corners=False)
    horizontal = (labels >= len(SHAPES)).float()
    stripe_angle = (horizontal * math.pi / 2 + uniform(-math.pi / 6, math.pi / 6)).view(n, 1, 1)
    distractor_angle = stripe_angle + math.pi / 2
    period = uniform(0.25, 0.5).view(n, 1, 1)
    phase = uniform(0.0, 2 * math.pi).view(n, 1, 1)

    def stripes(angle: torch.Tensor) -> torch.Tensor:
        along = x * torch.cos(angle) + y * torch.sin(angle)
        return 0.5 + 0.5 * torch.sin(2 * math.pi * along / period + phase)

    patch_centre = uniform(-0.6, 0.6, 2, 1, 1)
    patch = ((x - patch_centre[:, 0]).abs() < 0.35) & ((y - patch_centre[:, 1]).abs() < 0.35)
    patch = distractor * patch.unsqueeze(1)
    background = background * (1 - patch) + patch * stripes(distractor_angle).unsqueeze(1)

    # Foreground: the class's shape, randomly placed, sized and rotated, filled with the class's stripes.
    centre = uniform(-0.35, 0.35, 2, 1, 1)
    radius = uniform(0.45, 0.7).view(n, 1, 1)
    rotation = uniform(0.0, 2 * math.pi).view(n, 1, 1)
    dx, dy = x - centre[:, 0], y - centre[:, 1]
    u = dx * torch.cos(rotation) + dy * torch.sin(rotation)
    v = -dx * torch.sin(rotation) + dy * torch.cos(rotation)
    mask = _shape_masks(labels % len(SHAPES), u, v, radius, pixel=2 / s).unsqueeze(1)
    # Colour is a weak cue, as in natural images: each class has its own hue, drawn with a spread
    # that overlaps its neighbours', so colour alone narrows a label down but does not give it.
    hue = (labels.float() / len(SYNTHETIC_CLASSES) + uniform(-0.2, 0.2)) % 1.0
    colour_a = _hsv_to_rgb(hue, uniform(0.5, 1.0), uniform(0.6, 1.0)).view(n, 3, 1, 1)
    colour_b = colour_a * uniform(0.0, 0.4, 1, 1, 1)  # a darker shade: the stripes always show
    fill = stripes(stripe_angle).unsqueeze(1)
    foreground = colour_a * fill + colour_b * (1 - fill)

    images = background * (1 - mask) + foreground * mask + noise * torch.randn(n, 3, s, s, generator=generator)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageData(
        SYNTHETIC_NAME,
        images[:n_train],
        labels[:n_train],
        images[n_train:],
        labels[n_train:],
        SYNTHETIC_CLASSES,
        f"generated shapes-and-stripes, {n_train} train / {n_test} held-out images at {s}x{s}, seed {seed}",
    )


# --- batches -----------------------------------------------------------------------------------------


def normalizer(data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of the training images (in [0, 1] units)."""
    x = data.train_x.float() / 255
    return x.mean((0, 2, 3)).view(1, 3, 1, 1), x.std((0, 2, 3)).view(1, 3, 1, 1)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The ResNet paper's CIFAR augmentation on a batch: zero-pad by ``pad``, take a random crop of the
    original size, flip half the images horizontally. Runs on the batch's device."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy.view(n, 1) + torch.arange(h, device=x.device)
    cols = dx.view(n, 1) + torch.arange(w, device=x.device)
    cols = torch.where(flip.view(n, 1), cols.flip(1), cols)
    index = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[index, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
