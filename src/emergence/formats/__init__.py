"""Every file format the pipeline writes, each with its writer and its reader in one module."""
