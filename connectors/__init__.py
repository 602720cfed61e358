"""How OpenSearch reaches the models: ML Commons connector blueprints and the FastAPI adapter they call."""
