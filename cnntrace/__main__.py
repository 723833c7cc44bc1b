from cnntrace.cli import main

main()
