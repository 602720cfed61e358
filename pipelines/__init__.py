"""Ingest and search pipelines and index templates, as jinja2 JSON templates the bootstrap renders."""
