"""Datasets as tensors: images in [-1, 1] (N, C, H, W) with optional labels, plus downloads with checksums."""

from genlab.data.builtin import BUILTINS
from genlab.data.images import DataError, ImageDataset, load_images, split

__all__ = ["BUILTINS", "DataError", "ImageDataset", "load_images", "split"]
