"""The Pareto front: which trials are on it, how it is drawn, and where it is published."""
