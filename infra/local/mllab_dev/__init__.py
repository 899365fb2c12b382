"""The local stack: launcher, gateway and benchmarks. Development only; never staged into a function."""
