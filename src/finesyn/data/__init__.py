"""Data: the generated fine-grained world, the real datasets' readers, the prepared cache, augmentation."""
