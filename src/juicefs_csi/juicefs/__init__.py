"""The `juicefs` client: pure command builders and the runner that executes them."""
