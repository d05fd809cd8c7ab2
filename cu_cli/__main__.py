from cu_cli.cli.app import main

main()
