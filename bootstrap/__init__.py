"""The bootstrap: OpenSearch and ML Commons made to match the config (`reconcile`), over one client."""
