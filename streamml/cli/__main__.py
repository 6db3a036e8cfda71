from streamml.cli.app import main

main()
