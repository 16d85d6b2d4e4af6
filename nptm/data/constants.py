"""Normalisation statistics and crop geometry of the datasets nptm knows."""

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
CIFAR_PAD = 4  # pad-4 random crop

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_RATIO = 224 / 256  # evaluation: Resize(256) + CenterCrop(224)
DEFAULT_RESOLUTION = 224
