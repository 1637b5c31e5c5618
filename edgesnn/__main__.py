from edgesnn.cli import main

main()
