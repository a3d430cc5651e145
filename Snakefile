# semantic-emergence. The workflow is workflow/Snakefile (Snakemake's standard layout); this file
# runs it from the repository root, where the workflow profile (profiles/default) is found.
include: "workflow/Snakefile"


# Snakemake takes the default target only from the main Snakefile, never from an included one
# (snakemake/snakemake#2056), so it is named here: everything `rule all` lists.
rule default:
    default_target: True
    input:
        rules.all.input,
