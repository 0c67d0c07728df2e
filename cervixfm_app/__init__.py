"""The faces of CervixFM for people: the ``cervixfm`` command line and the desktop viewer."""
