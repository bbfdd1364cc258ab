"""Container runtimes: a Protocol and the Docker implementation."""
