"""Word models: the typed specs of the config's ``word_models`` and the concept vectors
(:mod:`.spec`), vector files (:mod:`.vector_files`, :mod:`.gensim_data`), matching a concept
to a vocabulary (:mod:`.matching`), a concept's fallback lemmas and gloss (:mod:`.lexicon`)
and text encoders (:mod:`.text_encoders`)."""
