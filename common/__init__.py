"""Pieces every room of the project shares: the config and the exported models' facts."""
