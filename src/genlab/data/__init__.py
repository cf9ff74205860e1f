"""Datasets as tensors: images in [-1, 1] (N, C, H, W) with optional labels, plus downloads with checksums.

Imports inside the package run one way, bottom to top: images (the dataset type and preprocessing),
tokenizers, corpora, fetch; then readers, builtin, text, loader, text_loader; then sources (load_images).
"""

from genlab.data.builtin import BUILTINS
from genlab.data.images import ImageDataset, split
from genlab.data.sources import load_images
from genlab.errors import DataError

__all__ = ["BUILTINS", "DataError", "ImageDataset", "load_images", "split"]
