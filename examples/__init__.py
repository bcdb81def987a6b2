"""Example scenarios; shipped inside the package as ``liqmon.examples`` (used by ``liqmon demo``)."""
