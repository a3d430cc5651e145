# semantic-emergence: Dharmaretnam & Fyshe (2018), "The Emergence of Semantics in Neural
# Network Representations of Visual Information", as a reproducible workflow.
# Read top to bottom, the includes are the paper's method.
from snakemake.utils import min_version

min_version("9.0")


# The demo config unless one is given: `--configfile X` replaces it (it is not merged in);
# `--config key=value` edits whichever config is in use.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/images.smk"  # sample images per concept into groups
include: "workflow/rules/concepts.smk"  # word vectors, concepts in every model, W
include: "workflow/rules/activations.smk"  # one forward pass per network x group -> I
include: "workflow/rules/two_vs_two.smk"  # 2 vs 2 + RSA, permutation shards, p-values
include: "workflow/rules/one_vs_two.smk"  # 1 vs 2 test on misclassified images
include: "workflow/rules/figures.smk"  # Figs. 1-4 and the overview


rule all:
    input:
        all_outputs(),
    default_target: True
