"""What an application does with the product: bulk ingest with back-pressure, replay of dead letters, queries.

Nothing here calls a model: OpenSearch does, through its pipelines.
"""
