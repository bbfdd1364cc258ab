"""Backends: the store, the container runtime, the kernel channel, images."""
