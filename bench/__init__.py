"""flexbill's benchmark (issue 5): a data generator, a hand-written SQL anchor, a naive pandas baseline, a runner."""
