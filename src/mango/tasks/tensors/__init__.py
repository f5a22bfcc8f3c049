"""The ``tensors`` task: your own modalities as arrays in ``.npz`` files (docs/tensors.md)."""
