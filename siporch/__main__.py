from siporch.cli import main

main()
