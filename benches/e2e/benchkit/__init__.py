"""End-to-end benchmark harness for uringapi; the entry point is ``benches/e2e/run.py``."""
