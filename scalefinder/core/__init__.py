"""The foundation both halves stand on: the error family, the run-directory format, the metric
catalogue, the one definition of "SLO met", the typed models of the contract, and redaction.

Nothing here imports the run side, the read side or the command line (tests/test_layers.py).
"""
