from aurora_streams.cli import main

main()
