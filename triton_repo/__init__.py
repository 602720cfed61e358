"""The Triton model repository: jinja2 templates for both profiles, python-backend models, and their logic."""
