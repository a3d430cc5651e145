"""Image sources: the typed spec of the config's ``images`` section (:mod:`.spec`) and what
each source reads (:mod:`.emoji`, :mod:`.imagenet` with :mod:`.imagenet_labels` and
:mod:`.imagenetv2`, :mod:`.folders`), how files are listed (:mod:`.listing`) and how the
groups are drawn (:mod:`.groups`)."""
