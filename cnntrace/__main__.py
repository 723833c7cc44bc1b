"""cnntrace's entry point, for the console script and ``python -m cnntrace``.

``--version`` is answered here, before the command line (typer and its commands) is loaded.
"""

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from cnntrace import __version__

        sys.stdout.write(f"cnntrace {__version__}\n")
        return
    from cnntrace.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
