"""What an analyzed run becomes for people and for CI: the HTML report, the summaries, the
gate verdict with its JUnit file, and the index of runs under a reports folder.

Every function here reads a run directory and its findings and writes files beside them; none
sends load or reads the network.
"""
