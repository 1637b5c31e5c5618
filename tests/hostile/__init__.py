"""Hostile and broken inputs for the edgesnn CLI (issue 17): generators and a fork-server harness.

- artifacts.py: the valid base artifacts every case starts from, built once per session;
- mutate.py: format-agnostic mutations (bytes, JSON-like trees, encodings, file names);
- formats.py: hostile files of each format (safetensors, .npz, NIR/HDF5, YAML bombs);
- cases.py: one case = a damaged file + the real command that reads it + what may happen;
- targeted.py: the exact attacks issue 17 names;
- server.py: the fork server that runs each case's command under RLIMIT_AS and a time limit;
- harness.py: materializes cases, runs them through the server and checks the outcome.

Used by tests/test_hostile.py (a bounded run in CI) and scripts/fuzz_cli.py (long runs).
"""
