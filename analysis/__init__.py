"""The read side: pure functions from a run directory to findings, reports and gate verdicts.

Nothing here sends load, reads a clock or touches the network; every function can be tested on
synthetic series with known answers.
"""
