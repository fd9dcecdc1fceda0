"""`python -m embsqlite`: the same command line as `embsqlite`."""
from .cli import cli

if __name__ == "__main__":
    cli(prog_name="embsqlite")
