from uringapi.cli import main

main()
