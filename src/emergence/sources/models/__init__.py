"""Model sources: the typed spec of a network and its loading (:mod:`.spec`), the loaded
model (:mod:`.loaded`), Python factories (:mod:`.factories`), checkpoint files
(:mod:`.checkpoints`) and the layers extracted (:mod:`.layers`)."""
