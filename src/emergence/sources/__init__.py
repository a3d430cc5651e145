"""Where concepts, images, networks and word vectors come from: image sources (the manifest
of groups), model sources (timm, checkpoints) and word models (vector files, text encoders)."""
