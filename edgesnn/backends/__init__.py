"""Deployment backends: each writes one target's artifact and runs it in that target's real runtime."""
