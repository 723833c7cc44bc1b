"""cnntrace's entry point, for the console script and ``python -m cnntrace``.

``--version`` is answered here, before the command line (typer and its commands) is loaded.
"""

import sys


def main() -> None:
    try:
        if sys.argv[1:] == ["--version"]:
            from cnntrace import __version__  # lazy: --version loads nothing else

            sys.stdout.write(f"cnntrace {__version__}\n")
            return
        from cnntrace.cli import main as cli_main  # lazy: typer and the commands, not for --version

        cli_main()
    except KeyboardInterrupt:  # before cli.main could answer it: answered as it would
        sys.stderr.write("cnntrace: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
