"""Word models: the typed specs of the config's ``word_models`` and the concept vectors
(:mod:`.spec`), vector files (:mod:`.vector_files`, :mod:`.gensim_data`), matching a concept
to a vocabulary (:mod:`.matching`), a concept's fallback lemmas and gloss (:mod:`.lexicon`)
and text encoders (:mod:`.text_encoders`)."""

# Every word model type registers itself with WordModelSpec when its module is imported.
from emergence.sources.words import precomputed, spec, transformers  # noqa: E402, F401
