"""The diffusion branch: the MapDiff forward pass over real images and the MapDiff maps."""
