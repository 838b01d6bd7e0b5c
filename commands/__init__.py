"""The saeembed command line: one thin module per command over the `saeembed` library."""
