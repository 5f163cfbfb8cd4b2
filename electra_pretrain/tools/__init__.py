"""Tools over both apps: benchmarks against peers and corpus preparation."""
