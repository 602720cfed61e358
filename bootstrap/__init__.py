"""The admin side: the local stack launcher (OpenSearch, Triton, adapter) and the bootstrap reconciler."""
