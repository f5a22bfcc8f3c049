"""Per-modality encoders: features from images, depth and text."""
