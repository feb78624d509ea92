from nar_search.search.cli.app import main

main()
