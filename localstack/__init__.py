"""What `make up` runs on 127.0.0.1: OpenSearch assembled from Maven, the embedded Triton, the adapter, and the
supervisor that keeps them running. Nothing here is needed by a deployment that runs its own servers."""
