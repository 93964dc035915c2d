from polyemo.cli import main

main()
