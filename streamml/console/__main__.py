from streamml.console.server import main

main()
