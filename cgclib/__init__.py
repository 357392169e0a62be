"""cgclib: the library behind the CGC research companion.

Everything a chapter notebook computes lives here, one module per concept, so that the
notebooks stay thin (parameters, calls, a plot, glue, ledger records) and every computation
is unit tested.
"""

__version__ = "0.1.0"
