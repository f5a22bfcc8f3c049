"""Tiny datasets written in each real on-disk layout, for tests, docs and smoke runs.

Every writer builds a few samples in exactly the layout a user's download has (lists, folders,
file formats and bit depths; docs/data.md), so the readers, ``mango data check`` and the CLI
meet the same files they meet in real use. ``mango bench`` and the smoke configs use them at run
time, which is why they ship in the package:

- :mod:`mango.testing.rgbd`: NYUDv2 and SUN RGB-D (RGB, 16-bit depth, label masks, lists);
- :mod:`mango.testing.mmimdb`: MM-IMDb, both the HDF5 release and the raw folder;
- :mod:`mango.testing.taskonomy`: Taskonomy domain folders and the split lists;
- :mod:`mango.testing.tensors`: the ``tensors`` format (``train.npz``/``val.npz``/``test.npz``).
"""
