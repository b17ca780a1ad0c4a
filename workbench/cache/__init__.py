"""The activation cache: activations of a corpus split streamed to one HDF5 file.

`store` writes and reads it (`workbench cache`), `plan` sizes its chunks and memory, `partial`
keeps an interrupted cache resumable, `join` joins rank-sharded files.
"""
