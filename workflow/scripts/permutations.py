import _src  # noqa: F401  (src/ on sys.path, thread pools capped: see _src.py)

from emergence.analysis import null_shard
from emergence.device import job_device
from emergence.formats.activations import load_groups
from emergence.formats.word_matrix import read_word_matrix
from emergence.runner import start
from emergence.stats.permutation import shard_range

smk = snakemake  # noqa: F821
log = start(smk)
perm = smk.params.permutations
wnids, w_mat, _ = read_word_matrix(smk.input.matrix)
groups = load_groups(smk.input.groups, smk.params.groups, wnids, smk.wildcards.network)
start_i, stop_i = shard_range(perm["n"], perm["shards"], int(smk.wildcards.shard),
                              perm["batch_size"])
log.info("permutations %d..%d of %d", start_i, stop_i - 1, perm["n"])
null_shard(smk.output[0], smk.wildcards.word_model, w_mat, groups, seed=smk.params.seed,
           start=start_i, stop=stop_i, batch_size=perm["batch_size"],
           rsa_method=smk.params.rsa_method,
           device=job_device(perm["device"], smk.resources.get("gpu", 0)))
