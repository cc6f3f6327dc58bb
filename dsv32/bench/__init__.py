"""Benchmarks: each measures what it compares side by side in one run, prints a table, writes a PNG
and a JSON file, and prints one JSON line last. Registered in `dsv32.bench.commands.BENCHMARKS`."""
