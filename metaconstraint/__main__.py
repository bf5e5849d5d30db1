"""``python -m metaconstraint``: the command-line interface, as the ``metaconstraint`` command."""

from metaconstraint.cli import app

app(prog_name="metaconstraint")
