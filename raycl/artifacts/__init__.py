"""Where artifacts come from: built once into the local cache, or read from disk or the model hub.

The bottom layer beside `raycl.config`: it imports nothing else from raycl, so every layer above
(worlds, datasets, models, benchmarks) can build and fetch through it.
"""
