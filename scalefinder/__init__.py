"""scalefinder: find which metric to auto-scale a service on, and at what target, by load-testing it.

Three layers, each importing only from those below it (tests/test_layers.py checks this):

* ``scalefinder.cli``, ``scalefinder.demo`` - the command line, which assembles the commands of
  both halves and maps errors to exit codes;
* ``scalefinder.loadgen`` (repository folder ``loadgen/``) - the run side: profiles, the local
  cluster, the Locust engine, capacity controllers and metric sources; it writes a run directory;
  ``scalefinder.analysis`` (folder ``analysis/``) - the read side: pure functions from a run
  directory to findings, the report and the CI gate. Neither half imports the other;
* ``scalefinder.core`` - what both halves share: the error family, the run-directory format, the
  metric catalogue, the typed models and the one definition of "SLO met".

``scalefinder.profiles`` (folder ``profiles/``) holds the example profiles as package data.
"""

__version__ = "0.1.0"
