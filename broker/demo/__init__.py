"""The demo shown by `make demo` and the synthetic data it (and the tests and benchmarks) publish."""
