"""Dataset readers: Fashion-MNIST (IDX), CIFAR-10 (python archive), EDM-style image folders/zips, synthetic;
VAE latent datasets in lowdiff.data.latents (imported on demand: it needs diffusers to encode)."""
from .datasets import (DatasetError, ImageDataset, load_cifar10, load_fashion_mnist, load_image_folder, make_synthetic,
                       open_dataset, read_idx, save_image_folder, write_idx)

__all__ = ["DatasetError", "ImageDataset", "load_cifar10", "load_fashion_mnist", "load_image_folder", "make_synthetic",
           "open_dataset", "read_idx", "save_image_folder", "write_idx"]
