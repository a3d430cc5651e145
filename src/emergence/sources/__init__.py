"""Where concepts, images, networks and word vectors come from, one package per kind of source:

* :mod:`emergence.sources.images`: image sources, which write the manifest of groups
  (emoji, ImageNet, a folder per concept);
* :mod:`emergence.sources.models`: model sources (timm, checkpoints, Python factories) and
  the layers extracted;
* :mod:`emergence.sources.words`: word models (vector files, gensim-data, text encoders).

What the three share (concepts, the manifest, names in NFC, timm's ImageNet tables) is
:mod:`emergence.sources.common`, a leaf that imports none of them. Nothing is re-exported
here: importing one source module never loads the others.
"""
