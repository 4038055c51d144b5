"""The ``relco`` command line: the Release Coordinator API from a terminal or CI (never packaged
into Lambda)."""
