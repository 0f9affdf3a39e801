"""The command-line application: the Typer app, the commands, the pipeline, the report, doctor."""
