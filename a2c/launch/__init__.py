"""Launching: `a2c local`, the cluster's topology on one machine, and its supervisor."""
