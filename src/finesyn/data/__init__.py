"""Datasets: the prepared cache, the official layouts (sources/), the generated one, augmentation."""
