"""The jobs behind the CLI, one module per command family. A job loads its inputs, calls the
library, keeps its state in the one run store (:mod:`hesig.jobs.runstore`) and returns a
JSON-serialisable summary; the CLI only parses options and prints it."""
