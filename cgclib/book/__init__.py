"""The book's own machinery, apart from the science: the chapter runner and its parameters
(`chapters`), the `cgc` command line (`cli`), parallel execution of every chapter into the
book's cache (`execution`), parameter sweeps (`sweeps`), the two Sphinx extensions that render
the claims ledger and the executed-notebook downloads (`sphinx_ledger`, `sphinx_downloads`),
and the benchmarks of the library's hot paths (`bench`).

Nothing in the science modules of `cgclib` imports from here.
"""
