"""One forward pass per network x group: preprocessing, hooks, and the streamed reduction of
each layer's activations to exact image x image Pearson statistics."""
